"""`TemperatureSchedule`: anneals the temperature variable during `fit` (per epoch or per batch), the
model trains with the new value, the train function is not retraced, and `get_config` saves it."""

import keras
import numpy as np
import pytest

from dab_keras import estimators, layers
from dab_keras.callbacks import TemperatureSchedule, exponential_decay

BACKEND = keras.backend.backend()
BATCH = 4
STEPS = 2
X = np.random.default_rng(0).normal(size=(BATCH * STEPS, 3)).astype("float32")


class TraceCounter(keras.layers.Layer):
    """Identity layer counting how often its Python `call` runs (once per trace in compiled code)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, inputs):
        self.calls += 1
        return inputs


class Recorder(keras.callbacks.Callback):
    """Records, at each epoch end, the trace count, the train function and the temperature."""

    def __init__(self, counter, layer):
        super().__init__()
        self.counter = counter
        self.layer = layer
        self.traces, self.train_functions, self.temperatures = [], [], []

    def on_epoch_end(self, epoch, logs=None):
        self.traces.append(self.counter.calls)
        self.train_functions.append(self.model.train_function)
        self.temperatures.append(float(keras.ops.convert_to_numpy(self.layer.temperature)))


def relaxed_sign_model(jit_compile):
    """x -> identity Dense (frozen by a zero learning rate) -> counter -> relaxed Sign: y = tanh(x / tau).

    With zero targets the loss of a batch is mean(tanh(x / tau)^2), so the loss shows the temperature
    the compiled train step actually read.
    """
    inputs = keras.Input((3,))
    counter = TraceCounter(name="counter")
    sign = layers.Sign(estimator=estimators.Relaxed(temperature=1.0), name="sign")
    outputs = sign(counter(keras.layers.Dense(3, kernel_initializer="identity", name="pre")(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=jit_compile)
    return model, counter, sign


def batch_loss(batch, tau):
    return float(np.mean(np.tanh(batch.astype(np.float32) / np.float32(tau)) ** 2))


JIT_MODES = [False, True] if BACKEND == "tensorflow" else [True]


def _check_no_retrace(recorder, calls_before_fit, jit_compile):
    assert recorder.traces[0] > calls_before_fit  # the counter sees the train step being traced
    if BACKEND == "jax" and not jit_compile:
        return  # un-jitted JAX runs the Python step every batch
    assert len(set(recorder.traces)) == 1, f"the train step was retraced: {recorder.traces}"
    assert all(f is recorder.train_functions[0] for f in recorder.train_functions)


@pytest.mark.parametrize("jit_compile", JIT_MODES)
def test_epoch_schedule(jit_compile):
    taus = [1.0, 0.5, 0.25]
    model, counter, sign = relaxed_sign_model(jit_compile)
    recorder = Recorder(counter, sign)
    calls_before_fit = counter.calls
    history = model.fit(
        X, np.zeros_like(X), batch_size=BATCH, epochs=len(taus), shuffle=False, verbose=0,
        callbacks=[TemperatureSchedule(lambda epoch: taus[epoch]), recorder],
    )
    assert recorder.temperatures == taus
    assert history.history["temperature"] == taus
    batches = np.split(X, STEPS)
    expected = [np.mean([batch_loss(b, tau) for b in batches]) for tau in taus]
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-5)
    _check_no_retrace(recorder, calls_before_fit, jit_compile)
    assert float(keras.ops.convert_to_numpy(sign.temperature)) == 0.25
    assert sign.get_config()["estimator"]["config"]["temperature"] == 0.25
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sign(X, training=True)), np.tanh(X / 0.25), rtol=1e-5)


@pytest.mark.parametrize("jit_compile", JIT_MODES)
def test_batch_schedule(jit_compile):
    epochs = 2
    model, counter, sign = relaxed_sign_model(jit_compile)
    recorder = Recorder(counter, sign)
    calls_before_fit = counter.calls
    seen = []

    def schedule(step):
        seen.append(step)
        return 1.0 / (1.0 + step)

    history = model.fit(
        X, np.zeros_like(X), batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
        callbacks=[TemperatureSchedule(schedule, update_freq="batch"), recorder],
    )
    assert seen == list(range(epochs * STEPS))  # the global batch index, across epochs
    taus = [np.float32(1.0 / (1.0 + step)) for step in seen]
    batches = np.split(X, STEPS)
    expected = [
        np.mean([batch_loss(b, taus[e * STEPS + i]) for i, b in enumerate(batches)]) for e in range(epochs)
    ]
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-5)
    _check_no_retrace(recorder, calls_before_fit, jit_compile)
    final = float(np.float32(1.0 / (1.0 + seen[-1])))
    assert float(keras.ops.convert_to_numpy(sign.temperature)) == final
    assert sign.get_config()["estimator"]["config"]["temperature"] == final
    assert recorder.temperatures[-1] == final


@pytest.mark.parametrize("jit_compile", JIT_MODES)
def test_batch_schedule_counts_steps_with_steps_per_execution(jit_compile):
    model, counter, sign = relaxed_sign_model(jit_compile)
    model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=jit_compile, steps_per_execution=2)
    seen = []

    def schedule(step):
        seen.append(step)
        return 1.0 / (1.0 + step)

    x = np.concatenate([X, X])  # 4 steps of BATCH: two compiled calls of 2 steps per epoch
    model.fit(x, np.zeros_like(x), batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
              callbacks=[TemperatureSchedule(schedule, update_freq="batch")])
    assert seen == [0, 2, 4, 6]  # the global step at the start of each call, not a count of calls


def test_only_listed_layers_and_layers_with_temperature():
    inputs = keras.Input((3,))
    annealed = layers.Sign(estimator="relaxed", name="annealed")
    kept = layers.Quantize(levels=3, estimator="straight_through", name="kept")
    bridged = layers.Sign(estimator=estimators.DAB(residual=False), name="bridged")  # no temperature: skipped
    model = keras.Model(inputs, bridged(kept(annealed(inputs))))
    everything = TemperatureSchedule(lambda epoch: 0.5)
    everything.set_model(model)
    everything.on_epoch_begin(0)
    for layer in (annealed, kept):
        assert float(keras.ops.convert_to_numpy(layer.temperature)) == 0.5
    assert bridged.temperature is None
    listed = TemperatureSchedule(lambda epoch: 0.125, layers=[kept])
    listed.set_model(model)
    listed.on_epoch_begin(0)
    assert float(keras.ops.convert_to_numpy(annealed.temperature)) == 0.5
    assert float(keras.ops.convert_to_numpy(kept.temperature)) == 0.125


@pytest.mark.parametrize("value", [0.0, -0.5, float("nan")])
@pytest.mark.parametrize("update_freq", ["epoch", "batch"])
def test_non_positive_schedule_value_raises(update_freq, value):
    model, _, sign = relaxed_sign_model(jit_compile=False)
    with pytest.raises(ValueError, match=r"`temperature` must be a finite number > 0\. Received: temperature="):
        model.fit(X, np.zeros_like(X), batch_size=BATCH, epochs=1, verbose=0,
                  callbacks=[TemperatureSchedule(lambda t: value, update_freq=update_freq)])
    assert float(keras.ops.convert_to_numpy(sign.temperature)) == 1.0


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"`schedule` must be a callable"):
        TemperatureSchedule(0.5)
    with pytest.raises(ValueError, match=r"`update_freq` must be one of 'epoch', 'batch'\. Received: update_freq='step'"):
        TemperatureSchedule(lambda t: 1.0, update_freq="step")


def test_exponential_decay():
    schedule = exponential_decay(2.0, 0.5, minimum=0.3)
    assert [schedule(t) for t in range(4)] == [2.0, 1.0, 0.5, 0.3]
    with pytest.raises(ValueError, match=r"`rate` must be a finite number > 0"):
        exponential_decay(1.0, 0.0)
