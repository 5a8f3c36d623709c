"""`Sort`: sorted values, ranks, the sorting permutation matrix, or argsort indices."""

import keras
from keras import ops

from dab_keras import _validation
from dab_keras import ops as dab_ops
from dab_keras.layers.approximators import AxisMLP
from dab_keras.layers.base import DiscreteLayer

SORT_MODES = ("values", "ranks", "permutation", "indices")
RELAXATIONS = ("neuralsort", "softsort")


@keras.saving.register_keras_serializable(package="dab_keras", name="Sort")
class Sort(DiscreteLayer):
    r"""Sorts along `axis`, returning values, ranks, the permutation matrix, or indices.

    Forward, with $P$ the hard permutation matrix ($P_{ij} = [j = \operatorname{argsort}(x)_i]$):

    - `output_mode="values"`: $P x$, the sorted values (same shape as the input);
    - `output_mode="ranks"`: the 1-based rank of each entry in `direction` order, $P^\top (1, \dots, n)$
      (same shape as the input; tied entries share their average rank, as `scipy.stats.rankdata`);
    - `output_mode="permutation"`: $P$, shape `(batch, ..., n, n)` with the other axes in their order
      and the sorted axis replaced by the two permutation axes (row i: which input holds the i-th value);
    - `output_mode="indices"`: argsort indices, int32 (not differentiable: no estimator runs, and no
      approximator is built).

    A slice holding a NaN gives NaN values / a NaN matrix / indices of -1.

    Gradient: the relaxed permutation $\hat P$ (`relaxation="neuralsort"`, Grover et al. 2019, or
    `"softsort"`, Prillo & Eisenschlos 2020) at temperature τ is the training output of `"relaxed"`
    ($\hat P x$, the soft ranks $\hat P^\top (1, \dots, n)$, or $\hat P$) and the surrogate of
    `"straight_through"`; `"dab"` uses a dense approximator over `axis` (to $n$ values or ranks, or
    $n \times n$ scores). Values and ranks are computed in row blocks without the $n \times n$ matrix
    (`dab_keras.ops.soft_sort_values`, `dab_keras.ops.soft_rank`: memory O(batch · 32 · n)); the
    permutation output is $n \times n$ by nature.

    Args:
        axis: Axis to sort (not the batch axis). Defaults to `-1`.
        direction: `"ascending"` or `"descending"`. Defaults to `"ascending"`.
        output_mode: `"values"`, `"ranks"`, `"permutation"` or `"indices"`. Defaults to `"values"`.
        relaxation: `"neuralsort"` or `"softsort"`. Defaults to `"neuralsort"`.
        estimator: `"straight_through"`, `"relaxed"`, `"dab"` or an `Estimator`.
            Defaults to `"straight_through"`.
        **kwargs: Base layer arguments.

    Input shape: `(batch, ..., n, ...)`, floating point. Output shape: the input's (`"values"`,
    `"ranks"`, `"indices"`) or `(batch, ..., n, n)` (`"permutation"`).

    Raises:
        ValueError: for an invalid argument; when built, for an `axis` out of range or 0, or an unknown
            size along it.

    Examples:
        >>> import numpy as np
        >>> x = np.array([[0.25, -1.0, 2.0]])
        >>> np.asarray(Sort()(x)).tolist()
        [[-1.0, 0.25, 2.0]]
        >>> np.asarray(Sort(output_mode="indices", direction="descending")(x)).tolist()
        [[2, 0, 1]]
        >>> np.asarray(Sort(output_mode="ranks")(x)).tolist()
        [[2.0, 1.0, 3.0]]
        >>> np.asarray(Sort(output_mode="permutation")(x)).tolist()
        [[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]

    References:
        Grover, Wang, Zweig & Ermon, "Stochastic Optimization of Sorting Networks via Continuous
        Relaxations", 2019, arXiv:1903.08850.
        Prillo & Eisenschlos, "SoftSort: A Continuous Relaxation for the argsort Operator", 2020,
        arXiv:2006.16038.
    """

    def __init__(
        self,
        axis=-1,
        direction="ascending",
        output_mode="values",
        relaxation="neuralsort",
        estimator="straight_through",
        **kwargs,
    ):
        super().__init__(estimator=estimator, **kwargs)
        self.axis = _validation.check_axis(axis)
        self.direction = _validation.check_one_of("direction", direction, dab_ops.sorting.DIRECTIONS)
        self.output_mode = _validation.check_one_of("output_mode", output_mode, SORT_MODES)
        self.relaxation = _validation.check_one_of("relaxation", relaxation, RELAXATIONS)
        self.differentiable = self.output_mode != "indices"

    def hard(self, x):
        if self.output_mode == "values":
            return dab_ops.sort(x, self.direction)
        if self.output_mode == "ranks":
            return dab_ops.rank(x, self.direction)
        return dab_ops.permutation_matrix(x, self.direction)

    def relax(self, x, temperature):
        if self.output_mode == "values":
            return dab_ops.soft_sort_values(x, temperature, self.direction, self.relaxation)
        if self.output_mode == "ranks":
            return dab_ops.soft_rank(x, temperature, self.direction, self.relaxation)
        relax = dab_ops.neural_sort if self.relaxation == "neuralsort" else dab_ops.soft_sort
        return relax(x, temperature, self.direction)

    def default_approximator(self, shape):
        n = shape[-1]
        target = (n, n) if self.output_mode == "permutation" else (n,)
        return AxisMLP(target, dtype=self.dtype_policy, name="approximator")

    def call(self, inputs, training=None):
        if self.output_mode == "indices":
            indices = dab_ops.argsort(self.op_inputs(inputs), self.direction)
            rank = len(inputs.shape)
            return indices if self._axis == rank - 1 else ops.moveaxis(indices, -1, self._axis)
        return super().call(inputs, training=training)

    def compute_output_shape(self, input_shape):
        if self.output_mode != "permutation":
            return tuple(input_shape)
        axis = self.axis % len(input_shape)
        n = input_shape[axis]
        return tuple(input_shape[:axis]) + tuple(input_shape[axis + 1 :]) + (n, n)

    def output_spec(self, inputs):
        dtype = "int32" if self.output_mode == "indices" else self.compute_dtype
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "direction": self.direction,
            "output_mode": self.output_mode,
            "relaxation": self.relaxation,
        }
