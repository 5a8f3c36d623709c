"""Estimators: the straight-through bridge, StraightThrough, Relaxed and DAB gradients, and `get`."""

import gradients
import keras
import numpy as np
import pytest
from keras import ops

from dab_keras import estimators, layers
from dab_keras import ops as dab_ops


def softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def built(layer, x):
    layer(x)
    return layer


# --------------------------------------------------------------------------- straight_through


def test_straight_through_value_is_bit_exact():
    hard = np.array([[1.0, -1.0, 0.0, 3.0, 1.0]], "float32")
    # `s + (h - s)` would round 1.0 away next to a surrogate of 3e7 (float32 spacing 2 there).
    surrogate = np.array([[3e7, -1e8, 0.1, 2.9, 1e-8]], "float32")
    out = estimators.bridge(hard, surrogate)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_array_equal(np.asarray(out), hard)


def test_straight_through_gradient_is_the_surrogate_vjp(rng):
    x = rng.normal(size=(3, 4)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    # The hard branch is differentiable here (x²) but must get no gradient.
    fn = lambda v: estimators.bridge(ops.square(v), 3.0 * ops.sin(v))  # noqa: E731
    np.testing.assert_array_equal(np.asarray(fn(x)), np.asarray(ops.square(x)))
    grad = gradients.vjp(fn, x, upstream)
    np.testing.assert_allclose(grad, upstream * 3.0 * np.cos(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, gradients.vjp(lambda v: 3.0 * ops.sin(v), x, upstream), rtol=1e-6)


def test_straight_through_with_a_hard_op_and_a_nonlinear_surrogate(rng):
    x = rng.normal(size=(2, 5)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    fn = lambda v: estimators.bridge(dab_ops.sign(v), dab_ops.soft_sign(v, 0.5))  # noqa: E731
    np.testing.assert_array_equal(np.asarray(fn(x)), np.where(x >= 0, 1.0, -1.0))
    expected = upstream * (1 - np.tanh(x / 0.5) ** 2) / 0.5
    np.testing.assert_allclose(gradients.vjp(fn, x, upstream), expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- StraightThrough


def test_straight_through_sign_has_identity_gradient(rng):
    x = rng.normal(size=(3, 6)).astype("float32")
    x[0, :2] = [0.0, 5.0]
    upstream = rng.normal(size=x.shape).astype("float32")
    layer = built(layers.Sign(estimator=estimators.StraightThrough()), x)
    res = gradients.layer_gradients(layer, x, upstream)
    np.testing.assert_array_equal(res["output"], np.where(x >= 0, 1.0, -1.0))
    np.testing.assert_array_equal(res["grad_x"], upstream)


@pytest.mark.parametrize("make_layer", [lambda e: layers.Sign(estimator=e),
                                        lambda e: layers.Quantize(levels=4, estimator=e)])
def test_straight_through_clip_value_zeroes_the_gradient_outside(rng, make_layer):
    c = 0.5
    x = np.array([[-2.0, -0.5001, -0.5, -0.4999, 0.0, 0.4999, 0.5, 0.5001, 2.0]], "float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    layer = built(make_layer(estimators.StraightThrough(clip_value=c)), x)
    res = gradients.layer_gradients(layer, x, upstream)
    np.testing.assert_array_equal(res["grad_x"], upstream * (np.abs(x) <= c))
    np.testing.assert_array_equal(res["output"], np.asarray(layer(x)))


def test_straight_through_relaxation_surrogate_on_argmax_is_the_softmax_jacobian(rng):
    tau = 0.5
    # Five copies of one row, each with a unit cotangent: the gradients are the Jacobian's rows.
    x = np.repeat(rng.normal(size=(1, 5)).astype("float32"), 5, axis=0)
    p = softmax(x[0] / tau)
    expected = (np.diag(p) - np.outer(p, p)) / tau
    for estimator in (estimators.StraightThrough(temperature=tau),
                      estimators.StraightThrough(surrogate="relaxation", temperature=tau)):
        layer = built(layers.ArgMax(estimator=estimator), x)
        res = gradients.layer_gradients(layer, x, np.eye(5, dtype="float32"))
        np.testing.assert_array_equal(res["output"], np.eye(5)[[np.argmax(x[0])] * 5])
        np.testing.assert_allclose(res["grad_x"], expected.T, rtol=1e-4, atol=1e-6)


def test_straight_through_relaxation_surrogate_on_sign_uses_the_layer_temperature(rng):
    x = rng.normal(size=(2, 4)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    layer = built(layers.Sign(estimator=estimators.StraightThrough(surrogate="relaxation", temperature=2.0)), x)
    layer.temperature.assign(0.25)  # an annealed temperature overrides the configured one
    res = gradients.layer_gradients(layer, x, upstream)
    np.testing.assert_array_equal(res["output"], np.where(x >= 0, 1.0, -1.0))
    np.testing.assert_allclose(res["grad_x"], upstream * (1 - np.tanh(x / 0.25) ** 2) / 0.25, rtol=1e-4,
                               atol=1e-6)


def test_straight_through_without_identity_surrogate_rejects_identity_and_clip_value():
    x = np.zeros((1, 3), "float32")
    with pytest.raises(ValueError, match="identity"):
        layers.ArgMax(estimator=estimators.StraightThrough(surrogate="identity"))(x, training=True)
    with pytest.raises(ValueError, match="clip_value"):
        layers.ArgMax(estimator=estimators.StraightThrough(clip_value=1.0))(x, training=True)


# --------------------------------------------------------------------------- Relaxed


def test_relaxed_soft_output_is_the_relaxation(rng):
    tau = 0.5
    x = rng.normal(size=(3, 5)).astype("float32")
    sign = built(layers.Sign(estimator=estimators.Relaxed(temperature=tau)), x)
    np.testing.assert_allclose(np.asarray(sign(x, training=True)), np.tanh(x / tau), rtol=1e-5, atol=1e-6)
    sign_m = built(layers.Sign(margin=0.2, estimator=estimators.Relaxed(temperature=tau)), x)
    expected = 0.5 * (np.tanh((x - 0.2) / tau) + np.tanh((x + 0.2) / tau))
    np.testing.assert_allclose(np.asarray(sign_m(x, training=True)), expected, rtol=1e-5, atol=1e-6)
    argmax = built(layers.ArgMax(estimator=estimators.Relaxed(temperature=tau)), x)
    np.testing.assert_allclose(np.asarray(argmax(x, training=True)), softmax(x / tau), rtol=1e-5, atol=1e-6)
    top_k = built(layers.TopK(k=2, estimator=estimators.Relaxed(temperature=tau)), x)
    soft = np.asarray(top_k(x, training=True))
    np.testing.assert_allclose(soft, np.asarray(dab_ops.soft_top_k(x, 2, tau)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(soft.sum(axis=-1), 2.0, atol=1e-3)
    # At inference every layer gives the hard op.
    np.testing.assert_array_equal(np.asarray(sign(x)), np.where(x >= 0, 1.0, -1.0))
    np.testing.assert_array_equal(np.asarray(argmax(x, training=False)), np.eye(5)[np.argmax(x, axis=-1)])


def test_relaxed_soft_gradient_is_the_relaxation_gradient(rng):
    tau = 0.5
    x = rng.normal(size=(2, 4)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    layer = built(layers.Quantize(levels=3, estimator=estimators.Relaxed(temperature=tau)), x)
    res = gradients.layer_gradients(layer, x, upstream)
    np.testing.assert_allclose(res["output"], np.asarray(dab_ops.soft_quantize(x, 3, tau)), rtol=1e-6)
    expected = gradients.vjp(lambda v: dab_ops.soft_quantize(v, 3, tau), x, upstream)
    np.testing.assert_allclose(res["grad_x"], expected, rtol=1e-5, atol=1e-7)


def test_relaxed_hard_outputs_hard_with_the_relaxation_gradient(rng):
    tau = 0.5
    x = rng.normal(size=(3, 5)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    sign = built(layers.Sign(estimator=estimators.Relaxed(temperature=tau, hard=True)), x)
    res = gradients.layer_gradients(sign, x, upstream)
    np.testing.assert_array_equal(res["output"], np.where(x >= 0, 1.0, -1.0))
    np.testing.assert_allclose(res["grad_x"], upstream * (1 - np.tanh(x / tau) ** 2) / tau, rtol=1e-4, atol=1e-6)

    argmax = built(layers.ArgMax(estimator=estimators.Relaxed(temperature=tau, hard=True)), x)
    res = gradients.layer_gradients(argmax, x, upstream)
    np.testing.assert_array_equal(res["output"], np.eye(5)[np.argmax(x, axis=-1)])
    p = softmax(x / tau)
    expected = p * (upstream - np.sum(p * upstream, axis=-1, keepdims=True)) / tau
    np.testing.assert_allclose(res["grad_x"], expected, rtol=1e-4, atol=1e-6)


def test_relaxed_sort_values(rng):
    tau = 0.3
    x = rng.normal(size=(2, 4)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    layer = built(layers.Sort(estimator=estimators.Relaxed(temperature=tau, hard=True)), x)
    res = gradients.layer_gradients(layer, x, upstream)
    np.testing.assert_array_equal(res["output"], np.sort(x, axis=-1))

    def relaxed_values(v):
        p = dab_ops.neural_sort(v, tau, "ascending")
        return ops.squeeze(ops.matmul(p, ops.expand_dims(v, -1)), -1)

    np.testing.assert_allclose(res["grad_x"], gradients.vjp(relaxed_values, x, upstream), rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- DAB


def make_dab_sign(x, gamma, residual=False):
    template = keras.layers.Dense(x.shape[-1], activation="tanh", name="g")
    estimator = estimators.DAB(approximator=template, gamma=gamma, residual=residual)
    layer = built(layers.Sign(margin=0.3, estimator=estimator), x)
    # The layer owns a copy of the template (its own weights); the template stays unbuilt.
    assert layer.approximator is not template and not template.built
    assert isinstance(layer.approximator, keras.layers.Dense) and layer.approximator.units == x.shape[-1]
    return layer, layer.approximator


@pytest.mark.parametrize("residual", [False, True])
def test_dab_output_is_hard_and_gradient_is_the_approximator_vjp(rng, residual):
    # Also `DAB.approximate`: g itself, whose VJP is the layer's backward.
    x = rng.normal(size=(3, 4)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    layer, c = make_dab_sign(x, gamma=2.5, residual=residual)
    w, b = np.asarray(c.kernel, np.float64), np.asarray(c.bias, np.float64)
    cx = np.tanh(x @ w + b)
    # The paper's g is the network c; the residual g is Sign's surrogate (the identity) plus c.
    gx = x + cx if residual else cx
    res = gradients.layer_gradients(layer, x, upstream)
    hard = np.where(x > 0.3, 1.0, np.where(x < -0.3, -1.0, 0.0))
    np.testing.assert_array_equal(res["output"], hard)
    # J_g(x)ᵀ u for c(x) = tanh(x W + b): (u ⊙ (1 - c²)) Wᵀ, plus u for the identity surrogate.
    expected = (upstream * (1 - cx**2)) @ w.T + (upstream if residual else 0.0)
    np.testing.assert_allclose(res["grad_x"], expected, rtol=1e-4, atol=1e-6)
    approximate = lambda v: layer.estimator.approximate(layer, v, layer.estimator_state)  # noqa: E731
    np.testing.assert_allclose(np.asarray(approximate(ops.convert_to_tensor(x))), gx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gradients.vjp(approximate, x, upstream), expected, rtol=1e-4, atol=1e-6)
    # The task loss does not reach the approximator's weights.
    assert len(res["grad_weights"]) == 2
    for grad in res["grad_weights"]:
        assert grad is None or not np.any(grad)
    # The added loss is exactly zero in value (the logged `loss` stays the task loss) ...
    assert len(res["losses"]) == 1
    assert float(res["losses"][0]) == 0.0
    # ... and the DAB loss, γ · mean over the batch of Σ (g(x) - h(x))², is reported as a metric.
    results = layer.estimator_state.reported_metrics()[0].result()
    error = np.mean(np.sum((gx - hard) ** 2, axis=-1))
    np.testing.assert_allclose(float(results["approximation_error"]), error, rtol=1e-5)
    np.testing.assert_allclose(float(results["dab_loss"]), 2.5 * error, rtol=1e-5)


def test_residual_dab_approximate_adds_the_relaxation_on_argmax(rng):
    x = rng.normal(size=(2, 5)).astype("float32")
    layer = built(layers.ArgMax(estimator=estimators.DAB(temperature=0.5)), x)
    g = layer.estimator.approximate(layer, ops.convert_to_tensor(x), layer.estimator_state)
    np.testing.assert_allclose(np.asarray(g), softmax(x / 0.5), rtol=1e-5, atol=1e-6)  # the correction is 0


@pytest.mark.parametrize("residual", [False, True])
def test_dab_loss_trains_the_approximator_only(rng, residual):
    x = rng.normal(size=(3, 4)).astype("float32")
    gamma = 2.5
    layer, c = make_dab_sign(x, gamma=gamma, residual=residual)
    w, b = np.asarray(c.kernel, np.float64), np.asarray(c.bias, np.float64)
    cx = np.tanh(x @ w + b)
    gx = x + cx if residual else cx
    hard = np.where(x > 0.3, 1.0, np.where(x < -0.3, -1.0, 0.0))
    res = gradients.layer_gradients(layer, x, np.zeros_like(x), include_losses=True)
    np.testing.assert_array_equal(res["grad_x"], 0.0)
    delta = 2 * gamma / x.shape[0] * (gx - hard) * (1 - cx**2)
    names = [v.path for v in layer.trainable_variables]
    grads = dict(zip(names, res["grad_weights"]))
    np.testing.assert_allclose(grads[c.kernel.path], x.T @ delta, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads[c.bias.path], delta.sum(axis=0), rtol=1e-4, atol=1e-6)
    assert np.abs(grads[c.kernel.path]).max() > 1e-3


def test_frozen_dab_layer_still_bridges_but_adds_no_loss(rng):
    x = rng.normal(size=(3, 4)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    layer, g = make_dab_sign(x, gamma=2.5)
    trainable = gradients.layer_gradients(layer, x, upstream)
    layer.trainable = False
    frozen = gradients.layer_gradients(layer, x, upstream)
    assert frozen["losses"] == [] and len(trainable["losses"]) == 1
    np.testing.assert_array_equal(frozen["output"], trainable["output"])
    np.testing.assert_allclose(frozen["grad_x"], trainable["grad_x"], rtol=1e-6)
    assert np.abs(frozen["grad_x"]).max() > 1e-4


def _train_dab_model(gamma, optimizer, x, y, steps=5):
    keras.utils.set_random_seed(7)
    model = keras.Sequential([
        keras.Input((x.shape[1],)),
        keras.layers.Dense(8, name="before", dtype="float32"),
        layers.Sign(estimator=estimators.DAB(gamma=gamma), name="sign", dtype="float32"),
        keras.layers.Dense(1, name="after", dtype="float32"),
    ])
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0)
    return [np.asarray(w) for w in model.get_weights()], history.history["loss"], history.history["dab_loss"]


def test_dab_gamma_only_scales_the_approximators_gradient_so_adam_ignores_it(rng):
    # The DAB loss is the only loss reaching g's weights and never reaches the others, so γ scales
    # g's gradient alone; Adam is invariant to a constant gradient scale (up to its ε).
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    w1, loss1, dab1 = _train_dab_model(1.0, keras.optimizers.Adam(1e-2, epsilon=1e-12), x, y)
    w100, loss100, dab100 = _train_dab_model(100.0, keras.optimizers.Adam(1e-2, epsilon=1e-12), x, y)
    # Equal up to float rounding, which Adam's normalisation can amplify in near-zero gradient components;
    # a DAB loss that leaked into the other layers moves their weights by 1e-2 and more here.
    for a, b in zip(w1, w100):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-3)
    # The logged loss is the task loss, the same for any γ; the DAB loss is logged apart.
    np.testing.assert_allclose(loss1, loss100, rtol=1e-3)
    assert dab100[0] > 10 * dab1[0]
    # Under SGD γ is g's learning-rate factor: the approximators differ, the layers around it do not
    # (their gradients never contain the DAB loss) until g's different Jacobian changes them.
    s1, _, _ = _train_dab_model(1.0, keras.optimizers.SGD(1e-2), x, y, steps=1)
    s100, _, _ = _train_dab_model(100.0, keras.optimizers.SGD(1e-2), x, y, steps=1)
    differs = [not np.allclose(a, b) for a, b in zip(s1, s100)]
    assert any(differs) and not all(differs)


def test_dab_default_approximator_gradient_on_argmax(rng):
    x = rng.normal(size=(2, 5)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    layer = built(layers.ArgMax(estimator=estimators.DAB(residual=False)), x)
    res = gradients.layer_gradients(layer, x, upstream)
    np.testing.assert_array_equal(res["output"], np.eye(5)[np.argmax(x, axis=-1)])
    expected = gradients.vjp(gradients.compiled(lambda v: layer.approximator(v)), x, upstream)
    assert np.abs(expected).max() > 1e-4
    np.testing.assert_allclose(res["grad_x"], expected, rtol=1e-4, atol=1e-6)
    gx = np.asarray(layer.approximator(x))
    assert float(res["losses"][0]) == 0.0
    results = layer.estimator_state.reported_metrics()[0].result()
    np.testing.assert_allclose(float(results["dab_loss"]), 10.0 * np.mean(np.sum((gx - res["output"]) ** 2, axis=-1)),
                               rtol=1e-5)


def _softmax(x, tau):
    z = np.exp((x - x.max(-1, keepdims=True)) / tau)
    return z / z.sum(-1, keepdims=True)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_residual_dab_starts_as_straight_through_on_argmax(rng, tau):
    # The default residual DAB: g = softmax(x / τ) + c(x) with c's output layer at zero, so before any
    # training its gradient is straight-through softmax's, J_softmax(x)ᵀ u = p ⊙ (u - ⟨p, u⟩) / τ.
    x = rng.normal(size=(3, 5)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    layer = built(layers.ArgMax(estimator=estimators.DAB(temperature=tau)), x)
    assert float(layer.temperature) == tau
    np.testing.assert_array_equal(np.asarray(layer.approximator(x)), 0.0)
    res = gradients.layer_gradients(layer, x, upstream)
    x64, u64 = x.astype(np.float64), upstream.astype(np.float64)
    p = _softmax(x64, tau)
    expected = p * (u64 - np.sum(p * u64, axis=-1, keepdims=True)) / tau
    np.testing.assert_allclose(res["grad_x"], expected, rtol=1e-4, atol=1e-6)
    # The approximation error is that of g = softmax, the correction's target being h - softmax.
    hard = np.eye(5)[np.argmax(x, axis=-1)]
    error = np.mean(np.sum((p - hard) ** 2, axis=-1))
    results = layer.estimator_state.reported_metrics()[0].result()
    np.testing.assert_allclose(float(results["approximation_error"]), error, rtol=1e-5)


@pytest.mark.parametrize("make", [lambda e: layers.Sign(estimator=e), lambda e: layers.Quantize(levels=4, estimator=e),
                                  lambda e: layers.TopK(k=2, estimator=e), lambda e: layers.Sort(estimator=e)],
                         ids=["sign", "quantize", "topk", "sort"])
def test_residual_dab_gradient_equals_straight_through_before_training(rng, make):
    x = rng.normal(size=(3, 6)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    dab = gradients.layer_gradients(built(make(estimators.DAB()), x), x, upstream)
    ste = gradients.layer_gradients(built(make(estimators.StraightThrough()), x), x, upstream)
    np.testing.assert_array_equal(dab["output"], ste["output"])
    np.testing.assert_allclose(dab["grad_x"], ste["grad_x"], rtol=1e-5, atol=1e-6)
    assert np.abs(dab["grad_x"]).max() > 1e-3


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_residual_dab_on_the_relaxation_starts_as_the_tanh_straight_through_on_sign(rng, tau):
    # DAB(surrogate="relaxation") on Sign: g = tanh(x / τ) + c(x), c at zero, so before training the
    # gradient is (1 - tanh²(x / τ)) / τ · u, the straight-through binary Concrete's (by hand).
    x = rng.normal(size=(4, 6)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    estimator = estimators.DAB(surrogate="relaxation", temperature=tau)
    assert estimator.state_tag == "ResidualDAB-relaxation"
    res = gradients.layer_gradients(built(layers.Sign(estimator=estimator), x), x, upstream)
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(res["output"], np.where(x >= 0, 1.0, -1.0))
    expected = (1.0 - np.tanh(x64 / tau) ** 2) / tau * upstream
    np.testing.assert_allclose(res["grad_x"], expected, rtol=1e-4, atol=1e-6)
    ste = gradients.layer_gradients(
        built(layers.Sign(estimator=estimators.StraightThrough(surrogate="relaxation", temperature=tau)), x),
        x, upstream)
    np.testing.assert_allclose(res["grad_x"], ste["grad_x"], rtol=1e-5, atol=1e-6)
    # The approximation error is that of g = tanh(x / τ) against the hard sign.
    error = np.mean(np.sum((np.tanh(x64 / tau) - np.where(x64 >= 0, 1.0, -1.0)) ** 2, axis=-1))
    layer = built(layers.Sign(estimator=estimators.DAB(surrogate="relaxation", temperature=tau)), x)
    layer(x, training=True)
    results = layer.estimator_state.reported_metrics()[0].result()
    np.testing.assert_allclose(float(results["approximation_error"]), error, rtol=1e-5)


def test_dab_surrogate_argument_is_checked_and_serialized():
    with pytest.raises(ValueError, match=r"`surrogate` must be one of .*Received: surrogate='tanh'"):
        estimators.DAB(surrogate="tanh")
    with pytest.raises(ValueError, match=r"needs residual=True. Received: surrogate='relaxation', residual=False"):
        estimators.DAB(residual=False, surrogate="relaxation")
    estimator = estimators.DAB(surrogate="identity")
    restored = estimators.get(estimators.serialize(estimator))
    assert restored.surrogate == "identity" and restored.residual
    assert restored.state_tag == "ResidualDAB-identity"
    assert estimators.DAB().state_tag == "ResidualDAB" and estimators.DAB(residual=False).state_tag == "DAB"
    # configs written before the argument existed load with the default
    config = estimators.serialize(estimators.DAB())
    del config["config"]["surrogate"]
    assert estimators.get(config).surrogate == "auto"
    # an op without an identity surrogate refuses it when the layer runs in training
    layer = layers.ArgMax(estimator=estimators.DAB(surrogate="identity"))
    with pytest.raises(ValueError, match=r"ArgMax has no identity surrogate.*Received: surrogate='identity'"):
        layer(np.zeros((2, 3), "float32"), training=True)


def test_residual_dab_learns_a_correction_that_lowers_its_error():
    # Fitting g = x + c(x) to sign(x) by the DAB loss alone: the error of g falls below the identity's.
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(-1, 1, size=(256, 8)).astype("float32")
    model = keras.Sequential([keras.Input((8,)), layers.Sign(estimator="dab", name="sign")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    history = model.fit(x, np.sign(x), batch_size=64, epochs=20, verbose=0)
    errors = history.history["approximation_error"]
    identity_error = np.mean(np.sum((x - np.sign(x)) ** 2, axis=-1))
    np.testing.assert_allclose(errors[0], identity_error, rtol=0.1)  # the first epoch starts at g = x
    assert errors[-1] < 0.8 * identity_error


# --------------------------------------------------------------------------- ReinMax (a sample's surrogate)


def gumbel(rng, shape):
    return -np.log(-np.log(rng.uniform(1e-6, 1.0, size=shape))).astype("float32")


def softmax_vjp(p, u):
    return p * (u - np.sum(p * u, axis=-1, keepdims=True))


def reinmax_categorical(logits, sample, u):
    """Liu et al.'s ReinMax (τ = 1) by hand: 2 J(π₁)u − J(π₀)u / 2, π₀ = softmax(ℓ), π₁ = (D + π₀) / 2."""
    p0 = softmax(logits)
    return 2.0 * softmax_vjp((sample + p0) / 2.0, u) - 0.5 * softmax_vjp(p0, u)


@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("source", ["noise", "stochastic"])
def test_reinmax_straight_through_on_a_categorical_sample(rng, axis, source):
    logits = (2.0 * rng.normal(size=(4, 5, 3))).astype("float32")
    upstream = rng.normal(size=logits.shape).astype("float32")
    noise = gumbel(rng, logits.shape)
    estimator = estimators.StraightThrough(surrogate="reinmax")
    if source == "noise":
        layer = layers.ArgMax(axis=axis, estimator=estimator)
        run = lambda v: layer(v, training=True, noise=noise)  # noqa: E731
    else:
        layer = layers.ArgMax(axis=axis, stochastic=True, seed=3, estimator=estimator)
        run = lambda v: layer(v, training=True)  # noqa: E731
    layer(logits)  # build
    if source == "stochastic":
        layer.seed_generator.state.assign(np.array([3, 0], layer.seed_generator.state.dtype))
    sample = np.asarray(run(logits), np.float64)
    if source == "noise":  # exactly the Gumbel-max sample of the given noise
        np.testing.assert_array_equal(sample, np.moveaxis(np.eye(3 if axis == -1 else 5)[
            np.moveaxis(logits + noise, axis, -1).argmax(-1)], -1, axis))
    assert set(np.unique(sample)) <= {0.0, 1.0}
    np.testing.assert_array_equal(sample.sum(axis=axis), 1.0)
    if source == "stochastic":  # the same sample again for the gradient
        layer.seed_generator.state.assign(np.array([3, 0], layer.seed_generator.state.dtype))
    grad = gradients.vjp(run, logits, upstream)
    move = lambda t: np.moveaxis(np.asarray(t, np.float64), axis, -1)  # noqa: E731
    expected = np.moveaxis(reinmax_categorical(move(logits), move(sample), move(upstream)), -1, axis)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)
    # a second-order term: not straight-through Gumbel's softmax Jacobian
    assert np.abs(grad - np.moveaxis(softmax_vjp(softmax(move(logits)), move(upstream)), -1, axis)).max() > 1e-2


def test_reinmax_straight_through_on_a_bit_sample(rng):
    logits = (2.0 * rng.normal(size=(6, 4))).astype("float32")
    upstream = rng.normal(size=logits.shape).astype("float32")
    noise = rng.logistic(size=logits.shape).astype("float32")
    layer = layers.Sign(estimator=estimators.StraightThrough(surrogate="reinmax"))
    sample = np.asarray(layer(logits, training=True, noise=noise), np.float64)
    np.testing.assert_array_equal(sample, np.where(logits + noise >= 0, 1.0, -1.0))
    grad = gradients.vjp(lambda v: layer(v, training=True, noise=noise), logits, upstream)
    # two categories (ℓ, 0) with z = D₊ − D₋: (4 p₁(1 − p₁) − p₀(1 − p₀)) u, p₀ = σ(ℓ), p₁ = ((1 + z)/2 + p₀)/2
    p0 = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    p1 = ((1.0 + sample) / 2.0 + p0) / 2.0
    np.testing.assert_allclose(grad, (4 * p1 * (1 - p1) - p0 * (1 - p0)) * upstream, rtol=1e-4, atol=1e-5)
    two = np.stack([logits, np.zeros_like(logits)], -1).astype(np.float64)  # the categorical case, directly
    onehot = np.stack([(1 + sample) / 2, (1 - sample) / 2], -1)
    np.testing.assert_allclose(grad, reinmax_categorical(two, onehot, np.stack([upstream, -upstream], -1))[..., 0],
                               rtol=1e-4, atol=1e-5)


def test_residual_dab_on_reinmax_adds_its_correction_to_reinmaxs_gradient(rng):
    logits = (2.0 * rng.normal(size=(4, 6, 3))).astype("float32")
    upstream = rng.normal(size=logits.shape).astype("float32")
    noise = gumbel(rng, logits.shape)
    layer = layers.ArgMax(estimator=estimators.DAB(surrogate="reinmax", temperature=0.5, gamma=1.0))
    layer(logits)
    network = layer.approximator
    for weight in network.trainable_weights:  # a non-zero correction c
        weight.assign(rng.normal(0.0, 0.3, weight.shape).astype("float32"))
    x = logits + noise
    layer.estimator_state.reported_metrics()[0].reset_state()  # the error reported from here on
    grad = gradients.vjp(lambda v: layer(v, training=True, noise=noise), logits, upstream)
    sample = np.eye(3)[x.argmax(-1)]
    correction = gradients.vjp(lambda v: network(v), x, upstream)  # J_c(ℓ + G)ᵀu
    np.testing.assert_allclose(grad, reinmax_categorical(logits, sample, upstream) + correction, rtol=1e-4,
                               atol=1e-5)
    # c is fitted to h minus the relaxation at τ: the reported error is that of softmax((ℓ + G)/τ) + c
    fitted = softmax(x / 0.5) + np.asarray(network(x), np.float64)
    error = np.mean(np.sum((fitted - sample) ** 2, axis=(1, 2)))
    np.testing.assert_allclose(float(layer.estimator_state.reported_metrics()[0].result()["approximation_error"]),
                               error, rtol=1e-4)
    assert layer.estimator.state_tag == "ResidualDAB-reinmax"
    restored = estimators.get(estimators.serialize(layer.estimator))
    assert restored.surrogate == "reinmax" and restored.residual


def test_reinmax_needs_a_sample_and_a_sampling_op(rng):
    x = rng.normal(size=(2, 3)).astype("float32")
    reinmax = estimators.StraightThrough(surrogate="reinmax")
    with pytest.raises(ValueError, match=r"surrogate='reinmax' needs a sample.*Received: a ArgMax call without one"):
        layers.ArgMax(estimator=reinmax)(x, training=True)
    with pytest.raises(ValueError, match=r"surrogate='reinmax' needs a sample.*Received: a Sign call without one"):
        layers.Sign(margin=0.5, estimator=reinmax)(x, training=True, noise=np.zeros_like(x))  # ternary: no mean
    with pytest.raises(ValueError, match=r"surrogate='reinmax' needs a sample"):
        layers.Sort(estimator=reinmax)(x, training=True)
    with pytest.raises(ValueError, match=r"`clip_value` applies to the identity surrogate only"):
        layers.Sign(estimator=estimators.StraightThrough(surrogate="reinmax", clip_value=1.0))(
            x, training=True, noise=np.zeros_like(x))
    with pytest.raises(ValueError, match=r"`noise` draws a sample: it cannot be combined with sample=False"):
        layers.ArgMax(stochastic=True)(x, sample=False, noise=np.zeros_like(x))
    with pytest.raises(ValueError, match=r"`noise` must have the inputs' shape \(2, 3\)"):
        layers.ArgMax()(x, noise=np.zeros((2, 4), "float32"))
    # at inference the layer outputs the sample of the given noise (no estimator involved)
    noise = np.array([[0.0, 5.0, 0.0], [9.0, 0.0, 0.0]], "float32")
    np.testing.assert_array_equal(np.asarray(layers.ArgMax(estimator=reinmax)(x, noise=noise)), np.eye(3)[[1, 0]])


# --------------------------------------------------------------------------- get / config / validation


@pytest.mark.parametrize("name,cls", [("straight_through", estimators.StraightThrough),
                                      ("ste", estimators.StraightThrough),
                                      ("relaxed", estimators.Relaxed),
                                      ("dab", estimators.DAB)])
def test_get_aliases(name, cls):
    estimator = estimators.get(name)
    assert type(estimator) is cls
    assert estimator.get_config() == cls().get_config()
    assert estimators.get(name) is not estimator  # a fresh instance each time


def test_get_returns_instances_as_is_and_reads_configs():
    for estimator in (estimators.StraightThrough(clip_value=1.0, surrogate="identity", temperature=2.0),
                      estimators.Relaxed(temperature=0.3, hard=True),
                      estimators.DAB(gamma=3.0)):
        assert estimators.get(estimator) is estimator
        config = estimators.serialize(estimator)
        assert isinstance(config, dict)
        restored = estimators.get(config)
        assert type(restored) is type(estimator) and restored is not estimator
        assert restored.get_config() == estimator.get_config()
    dab = estimators.get(estimators.serialize(estimators.DAB(approximator=keras.layers.Dense(3), gamma=0.5)))
    assert isinstance(dab.approximator, keras.layers.Dense) and dab.approximator.units == 3
    assert dab.gamma == 0.5


@pytest.mark.parametrize("identifier", ["gumbel", "STE", "", 3, None, 1.5,
                                        keras.saving.serialize_keras_object(keras.layers.Dense(2))])
def test_get_rejects_unknown_identifiers_and_lists_the_names(identifier):
    with pytest.raises(ValueError) as info:
        estimators.get(identifier)
    for name in ("'straight_through'", "'ste'", "'relaxed'", "'dab'"):
        assert name in str(info.value)


def test_get_rejects_a_broken_config_dict_naming_the_argument():
    config = estimators.serialize(estimators.DAB(gamma=3.0))
    config.update(class_name="NoSuchEstimator", registered_name="dab_keras>NoSuchEstimator")
    with pytest.raises(ValueError, match="`estimator` given as a dict"):
        estimators.get(config)


def test_layers_resolve_estimators_with_get():
    assert isinstance(layers.Sign(estimator="ste").estimator, estimators.StraightThrough)
    with pytest.raises(ValueError, match="'relaxed'"):
        layers.Sign(estimator="relax")


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, float("nan"), float("inf"), "1.0", None, True])
@pytest.mark.parametrize("cls", [estimators.Relaxed, estimators.StraightThrough])
def test_temperature_must_be_a_positive_number(cls, temperature):
    with pytest.raises(ValueError, match="temperature"):
        cls(temperature=temperature)


@pytest.mark.parametrize("make,name", [
    (lambda: estimators.StraightThrough(clip_value=0.0), "clip_value"),
    (lambda: estimators.StraightThrough(clip_value=-1.0), "clip_value"),
    (lambda: estimators.StraightThrough(surrogate="soft"), "surrogate"),
    (lambda: estimators.Relaxed(hard=1), "hard"),
    (lambda: estimators.DAB(gamma=-0.1), "gamma"),
    (lambda: estimators.DAB(approximator="mlp"), "approximator"),
])
def test_other_arguments_are_validated(make, name):
    with pytest.raises(ValueError, match=name):
        make()
