"""Keras callbacks: `TemperatureSchedule` anneals the temperature τ of relaxed/straight-through layers."""

import math

import keras

from dab_keras import _validation
from dab_keras.layers.base import DiscreteLayer

UPDATE_FREQS = ("epoch", "batch")


def exponential_decay(initial, rate, minimum=0.0):
    r"""A schedule $\tau(t) = \max(\tau_{\min}, \tau_0 \cdot r^t)$, for `TemperatureSchedule`.

    Args:
        initial: τ₀ > 0.
        rate: Factor r > 0 per unit of t (r < 1 decays, r = 1 keeps τ₀ constant).
        minimum: Floor τ_min >= 0. Defaults to `0.0`.

    Returns:
        A function `t -> τ` returning Python floats.

    Raises:
        ValueError: if `initial` or `rate` is not a finite number > 0, or `minimum` not one >= 0.

    Examples:
        >>> schedule = exponential_decay(1.0, 0.5, minimum=0.1)
        >>> [schedule(t) for t in range(5)]
        [1.0, 0.5, 0.25, 0.125, 0.1]
    """
    initial = _validation.check_positive_float("initial", initial)
    rate = _validation.check_positive_float("rate", rate)
    minimum = _validation.check_non_negative_float("minimum", minimum)
    return lambda t: max(minimum, initial * math.pow(rate, t))


class TemperatureSchedule(keras.callbacks.Callback):
    """Sets the temperature τ of `dab_keras` layers from a schedule during `fit`.

    τ lives in each layer's non-trainable `temperature` variable (created by its estimator, in
    `layer.estimator_state`; the callback finds it through `layer.temperature`, the one annealing mechanism
    of the package and its zoo), so changing it does not retrace the
    train function (graph mode, XLA, JAX alike). The new value is also what `get_config` saves. At the
    end of each epoch the callback adds the τ of the first layer it updates to the epoch logs as
    `temperature` (so `History` and `CSVLogger` record it).

    List it **before** `keras.callbacks.CSVLogger` and `keras.callbacks.TensorBoard`: Keras calls the
    callbacks in list order with one logs dict, so a writer listed earlier has already written the epoch
    when `temperature` is added, and τ never reaches it. (`dab_keras.zoo.train(callbacks=[...])` places
    its callbacks before its writers.)

    Args:
        schedule: Function `t -> τ` (`t` the epoch index, or with `update_freq="batch"` the global step,
            i.e. the optimizer's iteration count), returning a float > 0.
        layers: Layers to update. Defaults to `None`: every `dab_keras` layer in the model that has a
            temperature.
        update_freq: `"epoch"` (before each epoch) or `"batch"` (before each compiled call: every step,
            or every `steps_per_execution` steps, each call reading τ at its first step; on the JAX
            backend this syncs the model state before each call, which costs time). Defaults to
            `"epoch"`.
        verbose: If > 0 (and `update_freq="epoch"`), print τ at the start of each epoch. Defaults to `0`.

    Raises:
        ValueError: if `schedule` is not callable or `update_freq` is unknown; during `fit`, if the
            schedule returns a value that is not a finite number > 0.

    Examples:
        >>> import keras
        >>> import numpy as np
        >>> import dab_keras
        >>> model = keras.Sequential(
        ...     [keras.Input((4,)), keras.layers.Dense(4), dab_keras.layers.Sign(estimator="relaxed")]
        ... )
        >>> model.compile(loss="mse")
        >>> cb = TemperatureSchedule(exponential_decay(1.0, 0.5, minimum=0.1))
        >>> history = model.fit(np.ones((8, 4)), np.ones((8, 4)), epochs=3, callbacks=[cb], verbose=0)
        >>> history.history["temperature"]
        [1.0, 0.5, 0.25]
    """

    def __init__(self, schedule, layers=None, update_freq="epoch", verbose=0):
        super().__init__()
        if not callable(schedule):
            raise ValueError(f"`schedule` must be a callable t -> temperature. Received: schedule={schedule!r}")
        self.schedule = schedule
        self.layers = layers
        self.update_freq = _validation.check_one_of("update_freq", update_freq, UPDATE_FREQS)
        self.verbose = verbose
        self._step = 0

    def _targets(self):
        layers = self.layers
        if layers is None:
            layers = [layer for layer in self.model._flatten_layers() if isinstance(layer, DiscreteLayer)]
        return [layer for layer in layers if getattr(layer, "temperature", None) is not None]

    def _set(self, t):
        value = _validation.check_positive_float("temperature", float(self.schedule(t)))
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()  # the JAX trainer keeps state outside the variables during an epoch
        for layer in self._targets():
            layer.temperature.assign(value)
        return value

    def on_epoch_begin(self, epoch, logs=None):
        if self.update_freq == "epoch":
            value = self._set(epoch)
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: TemperatureSchedule set temperature to {value:.4g}.")

    def _global_step(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return self._step
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()  # the JAX trainer's iteration count lives outside the variable during an epoch
        return int(keras.ops.convert_to_numpy(optimizer.iterations))

    def on_train_batch_begin(self, batch, logs=None):
        if self.update_freq == "batch":
            self._set(self._global_step())
        self._step += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            targets = self._targets()
            if targets:
                logs["temperature"] = float(keras.ops.convert_to_numpy(targets[0].temperature))
