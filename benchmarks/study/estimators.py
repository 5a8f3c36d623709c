"""Estimators the study compares against that the library does not ship.

`IdentityStraightThrough` is the baseline of the DAB paper's sort experiments (Ramapuram & Webb,
arXiv:1905.03658): the hard sort forward, and the upstream gradient handed to the input *unpermuted*,
as if the op were the identity. The library's `StraightThrough` refuses `surrogate="identity"` for
`Sort` (its output is a permutation of the input, not a copy in place) and uses the relaxed permutation
instead; this class exists to reproduce the paper's comparison, not as a recommendation.
"""

import keras

from dab_keras import ops as dab_ops
from dab_keras.estimators import Estimator, bridge


@keras.saving.register_keras_serializable(package="benchmarks.study", name="IdentityStraightThrough")
class IdentityStraightThrough(Estimator):
    r"""Hard forward, identity backward: $y = h(x)$, $\partial L / \partial x = \partial L / \partial y$.

    For `Sort(output_mode="values")` the gradient of the i-th sorted value goes to the i-th *input*
    (not to the input that holds that value). Needs an op whose hard output has the input's shape
    (`Sign`, `Quantize`, `Sort` values or ranks, `TopK` values).

    Raises:
        ValueError: in training, when the hard output's shape is not the input's (e.g. a permutation
            matrix).

    Examples:
        >>> import numpy as np
        >>> import dab_keras
        >>> layer = dab_keras.layers.Sort(estimator=IdentityStraightThrough())
        >>> np.asarray(layer(np.array([[2.0, -1.0]]), training=True)).tolist()
        [[-1.0, 2.0]]
    """

    name = "identity"

    def __call__(self, op, x, hard, state):
        del state
        if tuple(hard.shape) != tuple(x.shape):
            raise ValueError(
                "The identity straight-through estimator needs a hard output shaped like the op's input "
                f"({type(op).__name__} gives {tuple(hard.shape)} for an input of {tuple(x.shape)}). "
                f"Received: output shape {tuple(hard.shape)}"
            )
        return bridge(hard, x)

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="benchmarks.study", name="ExactSortGradient")
class ExactSortGradient(Estimator):
    r"""The true gradient of sorted values: $\partial L / \partial x = P^\top \, \partial L / \partial y$.

    `Sort(output_mode="values")` is piecewise linear ($y = P x$ with $P$ constant between ties), so its
    gradient exists almost everywhere: each sorted value's gradient goes back to the input that holds it
    (as in GroupSort networks). A reference for the estimators of the sort non-linearity, not an estimator
    of an unknown gradient; only for `Sort` in `"values"` mode.

    Raises:
        ValueError: in training, for another op or output mode.

    Examples:
        >>> import numpy as np
        >>> import dab_keras
        >>> layer = dab_keras.layers.Sort(estimator=ExactSortGradient())
        >>> np.asarray(layer(np.array([[2.0, -1.0]]), training=True)).tolist()
        [[-1.0, 2.0]]
    """

    name = "exact"

    def __call__(self, op, x, hard, state):
        del state
        if getattr(op, "output_mode", None) != "values" or not hasattr(op, "direction"):
            raise ValueError(
                "ExactSortGradient applies to `Sort(output_mode='values')` only. Received: "
                f"{type(op).__name__} with output_mode={getattr(op, 'output_mode', None)!r}"
            )
        order = keras.ops.stop_gradient(dab_ops.argsort(x, op.direction))
        return bridge(hard, keras.ops.take_along_axis(x, order, axis=-1))

    def get_config(self):
        return {}
