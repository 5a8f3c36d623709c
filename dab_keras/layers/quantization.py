"""`Quantize`: uniform k-level quantization, trainable through an estimator."""

import keras

from dab_keras import _validation
from dab_keras import ops as dab_ops
from dab_keras.layers.approximators import ElementwiseMLP
from dab_keras.layers.base import DiscreteLayer


@keras.saving.register_keras_serializable(package="dab_keras", name="Quantize")
class Quantize(DiscreteLayer):
    r"""Rounds to `levels` evenly spaced values in `[min_value, max_value]`, with a chosen estimator.

    Forward: `dab_keras.ops.quantize` (inputs clipped to the range, then rounded to the grid).
    Gradient: identity for `"straight_through"` (pass `StraightThrough(clip_value=...)` to zero it
    outside a band), the smooth staircase `dab_keras.ops.soft_quantize` for `"relaxed"`, an element-wise
    approximator MLP's for `"dab"`.

    Args:
        levels: Number of levels, an integer >= 2.
        min_value: Lowest level. Defaults to `-1.0`.
        max_value: Highest level, > `min_value`. Defaults to `1.0`.
        estimator: `"straight_through"`, `"relaxed"`, `"dab"` or an `Estimator`.
            Defaults to `"straight_through"`.
        **kwargs: Base layer arguments.

    Input shape: `(batch, ...)` of any rank >= 1 (`(batch,)` too), floating point. Output shape: the same.

    Raises:
        ValueError: if `levels` is not an integer >= 2, `min_value` or `max_value` is not finite,
            `min_value >= max_value`, or for an unknown `estimator`.

    Examples:
        >>> import numpy as np
        >>> layer = Quantize(levels=5, min_value=0.0, max_value=1.0)
        >>> np.asarray(layer(np.array([[0.1, 0.4, 2.0]]))).tolist()
        [[0.0, 0.5, 1.0]]
    """

    def __init__(self, levels, min_value=-1.0, max_value=1.0, estimator="straight_through", **kwargs):
        super().__init__(estimator=estimator, **kwargs)
        self.levels = _validation.check_int("levels", levels, 2)
        self.min_value, self.max_value = _validation.check_range(min_value, max_value)

    min_rank = 1  # element-wise, like keras.layers.Activation

    def hard(self, x):
        return dab_ops.quantize(x, self.levels, self.min_value, self.max_value)

    def relax(self, x, temperature):
        return dab_ops.soft_quantize(x, self.levels, temperature, self.min_value, self.max_value)

    def identity_surrogate(self, x):
        return x

    def default_approximator(self, shape):
        return ElementwiseMLP(dtype=self.dtype_policy, name="approximator")

    def get_config(self):
        return {
            **super().get_config(),
            "levels": self.levels,
            "min_value": self.min_value,
            "max_value": self.max_value,
        }
