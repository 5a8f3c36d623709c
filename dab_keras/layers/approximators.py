"""Default DAB approximator networks: small tanh MLPs."""

import math

import keras
from keras import ops

from dab_keras import _validation


def _check_units(units):
    if isinstance(units, int):
        units = (units,)
    units = tuple(units)
    for u in units:
        _validation.check_int("units", u, 1)
    return units


class _MLP(keras.layers.Layer):
    """Hidden tanh `Dense` layers and a linear head, shared by the default approximators."""

    def __init__(self, units, activation, head_units, **kwargs):
        super().__init__(**kwargs)
        self.units = _check_units(units)
        self.activation = activation
        self.hidden = [
            keras.layers.Dense(u, activation=activation, dtype=self.dtype_policy, name=f"hidden_{i}")
            for i, u in enumerate(self.units)
        ]
        self.head = keras.layers.Dense(head_units, dtype=self.dtype_policy, name="head")

    def _build_stack(self, in_features):
        shape = (None, in_features)
        for layer in [*self.hidden, self.head]:
            if not layer.built:
                layer.build(shape)
            shape = (None, layer.units)

    def _run_stack(self, h):
        for layer in self.hidden:
            h = layer(h)
        return self.head(h)

    def zero_output(self):
        """Sets the linear head's weights to zero, so the network outputs 0 for every input.

        A residual `DAB` calls this on its default approximator, the learned correction to the op's
        surrogate: DAB then starts as straight-through. The hidden layers keep their random weights, so
        the head's first gradients are not zero and the correction starts learning at once.

        Returns:
            `self` (built).
        """
        for layer in self.hidden + [self.head]:
            if not layer.built:
                raise ValueError(f"Build `{self.name}` before calling `zero_output()`.")
        for variable in self.head.weights:
            variable.assign(ops.zeros(variable.shape, variable.dtype))
        return self

    def get_config(self):
        return {**super().get_config(), "units": list(self.units), "activation": self.activation}


@keras.saving.register_keras_serializable(package="dab_keras", name="ElementwiseMLP")
class ElementwiseMLP(_MLP):
    """Applies the same scalar → scalar tanh MLP to every entry of its input.

    The default DAB approximator of element-wise ops (`Sign`, `Quantize`): its parameters do not grow
    with the input size, and its Jacobian is diagonal, like the op's.

    Args:
        units: Hidden widths, an int or a tuple of ints >= 1. Defaults to `(32,)`.
        activation: Hidden activation. Defaults to `"tanh"`.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Input shape: any. Output shape: the input's.

    Raises:
        ValueError: if a width is not an integer >= 1.

    Examples:
        >>> import numpy as np
        >>> mlp = ElementwiseMLP(units=(16,))
        >>> tuple(mlp(np.zeros((2, 5), "float32")).shape)
        (2, 5)
        >>> mlp.count_params()  # 1 -> 16 -> 1, whatever the input size
        49
    """

    def __init__(self, units=(32,), activation="tanh", **kwargs):
        super().__init__(units, activation, head_units=1, **kwargs)

    def build(self, input_shape):
        self._build_stack(1)

    def call(self, inputs):
        return ops.squeeze(self._run_stack(ops.expand_dims(inputs, -1)), -1)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="dab_keras", name="AxisMLP")
class AxisMLP(_MLP):
    """A dense tanh MLP over the last axis whose output is reshaped to `output_shape`.

    The default DAB approximator of `ArgMax`, `Sort`, `TopK` (over the op's axis, moved last) and
    `VectorQuantize` (over the code dimension).

    Args:
        output_shape: Trailing output shape per input vector, a tuple of ints, e.g. `(n,)` or `(n, n)`.
        units: Hidden widths, an int or a tuple of ints >= 1. Defaults to `(128,)`.
        activation: Hidden activation. Defaults to `"tanh"`.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Input shape: `(..., n)`. Output shape: `(..., *output_shape)`.

    Raises:
        ValueError: if a width is not an integer >= 1.

    Examples:
        >>> import numpy as np
        >>> mlp = AxisMLP((3, 3), units=8)  # e.g. scores of a 3 x 3 permutation matrix
        >>> tuple(mlp(np.zeros((2, 3), "float32")).shape)
        (2, 3, 3)
    """

    def __init__(self, output_shape, units=(128,), activation="tanh", **kwargs):
        self.target_shape = tuple(int(d) for d in output_shape)
        super().__init__(units, activation, head_units=math.prod(self.target_shape), **kwargs)

    def build(self, input_shape):
        self._build_stack(input_shape[-1])

    def call(self, inputs):
        h = self._run_stack(inputs)
        if len(self.target_shape) == 1:
            return h
        lead = ops.shape(inputs)[:-1]
        return ops.reshape(h, (*lead, *self.target_shape))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], *self.target_shape)

    def get_config(self):
        return {**super().get_config(), "output_shape": list(self.target_shape)}
