"""`DiscreteLayer`: the Keras state shared by every op layer (estimator, temperature, approximator)."""

import keras
import numpy as np
from keras import ops

from dab_keras import _validation
from dab_keras import estimators as estimators_lib
from dab_keras.layers.approximators import ApproximationError


class DiscreteLayer(keras.layers.Layer):
    r"""Base class of layers that run a hard op and train through an estimator.

    A subclass defines the op: `hard(x)` (the exact forward), `relax(x, temperature)` (its continuous
    relaxation), optionally `identity_surrogate(x)` and `default_approximator(shape)`. For ops along an
    axis it sets `self.axis`; the base class then moves that axis last before the op (so `x` in these
    methods always has the op's axis last) and back afterwards. Math runs in float32 (float64 stays
    float64) whatever the dtype policy; outputs are cast to the layer's compute dtype.

    At inference (`training` false or unset) the layer returns the hard output for every estimator. In
    training it returns `estimator(self, x, hard, temperature)`.

    State the base class owns:

    - `temperature`: non-trainable float32 scalar variable, present when the estimator has a temperature
      (`Relaxed`, `StraightThrough`); anneal it with `dab_keras.callbacks.TemperatureSchedule`.
    - `approximator`: the DAB approximator network (with `estimator="dab"`), built in `build`.
    - the metric `<name>_approximation_error` (with `estimator="dab"`).

    Args:
        estimator: `"straight_through"` (alias `"ste"`), `"relaxed"`, `"dab"`, or a
            `dab_keras.estimators.Estimator`. Defaults to `"straight_through"`.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Raises:
        ValueError: for an unknown `estimator`; when built, for inputs of rank < 2, an `axis` out of
            range or equal to the batch axis, or an unknown size along `axis`.
        TypeError: when called on non-floating-point inputs.

    Examples:
        A new op: rounding to the nearest integer, with an identity straight-through gradient and
        $x - \sin(2\pi x)/2\pi$ (a smooth staircase that ignores τ) as its relaxation:

        >>> import keras
        >>> import numpy as np
        >>> class Round(DiscreteLayer):
        ...     def hard(self, x):
        ...         return keras.ops.round(x)
        ...     def relax(self, x, temperature):
        ...         return x - keras.ops.sin(2 * np.pi * x) / (2 * np.pi)
        ...     def identity_surrogate(self, x):
        ...         return x
        >>> np.asarray(Round()(np.array([[0.4, 1.6]]))).tolist()
        [[0.0, 2.0]]
        >>> Round(estimator="relaxed").temperature is not None  # relaxed: a temperature variable
        True
    """

    axis = None
    differentiable = True  # False for outputs no estimator can carry a gradient through (indices)

    def __init__(self, estimator="straight_through", **kwargs):
        super().__init__(**kwargs)
        self.estimator = estimators_lib.get(estimator)
        self.temperature = None
        if self.estimator.temperature is not None:
            self.temperature = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(self.estimator.temperature),
                trainable=False,
                dtype="float32",
                name="temperature",
            )
        self.approximator = None
        if isinstance(self.estimator, estimators_lib.DAB):
            self.approximator = self.estimator.approximator
            total = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="float32",
                                    name="approximation_error_total")
            count = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="float32",
                                    name="approximation_error_count")
            self.approximation_error = ApproximationError(total, count, name=f"{self.name}_approximation_error")
            self._error_sums = (total, count)

    # ------------------------------------------------------------------ op interface (subclasses)
    def hard(self, x):
        """The exact, non-differentiable forward of the op (subclasses implement it).

        Args:
            x: The op's input, float32 (float64 under a float64 policy), op axis last.

        Returns:
            The hard output: shaped like `x` for most ops (a `(..., n, n)` matrix for
            `Sort(output_mode="permutation")`).
        """
        raise NotImplementedError

    def relax(self, x, temperature):
        """The op's continuous relaxation at `temperature` (subclasses implement it).

        Used as the training output of `"relaxed"` and as the surrogate of `"straight_through"` for ops
        without an identity surrogate.

        Args:
            x: The op's input, float32 (float64 under a float64 policy), op axis last.
            temperature: τ, the layer's float32 temperature variable.

        Returns:
            A differentiable tensor shaped like `hard(x)`.

        Raises:
            NotImplementedError: in the base class (an op without a relaxation).
        """
        raise NotImplementedError(f"{type(self).__name__} has no relaxation.")

    def identity_surrogate(self, x):
        """A tensor shaped like `hard(x)` with identity Jacobian w.r.t. `x`, or `None` if there is none.

        Args:
            x: The op's input, op axis last.

        Returns:
            `None` in the base class; ops whose output is shaped like their input return `x`.
        """
        return None

    def default_approximator(self, shape):
        """A new, unbuilt DAB approximator for op inputs of `shape` (op axis last).

        Args:
            shape: The op input's shape with the op's axis last, batch axis first (`None`).

        Returns:
            A Keras layer mapping such inputs to tensors shaped like `hard(x)`.

        Raises:
            NotImplementedError: in the base class (pass `DAB(approximator=...)` instead).
        """
        raise NotImplementedError(f"{type(self).__name__} has no default approximator; pass one to DAB.")

    def add_approximation_loss(self, loss, error):
        """Adds the DAB loss with `add_loss` and accumulates `error` for `approximation_error`.

        Called by the `DAB` estimator in training (the layer must use it: the error sums exist only then).

        Args:
            loss: Scalar tensor, γ times `error`.
            error: Scalar tensor, the batch's mean per-example squared approximation error (added
                without gradient to the running sum; the step count grows by 1).
        """
        self.add_loss(loss)
        total, count = self._error_sums
        total.assign_add(ops.cast(ops.stop_gradient(error), "float32"))
        count.assign_add(1.0)

    # ------------------------------------------------------------------ Keras plumbing
    def _op_shape(self, input_shape):
        """Validates `input_shape` and returns it with the op's axis moved last."""
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank >= 2 (batch, features...). "
                f"Received: input_shape={input_shape}"
            )
        if self.axis is None:
            return input_shape
        axis = _validation.canonical_axis(self.axis, len(input_shape))
        if input_shape[axis] is None:
            raise ValueError(
                f"{type(self).__name__} needs a known size along `axis`. "
                f"Received: input_shape={input_shape}, axis={self.axis}"
            )
        self._axis = axis
        return input_shape[:axis] + input_shape[axis + 1 :] + (input_shape[axis],)

    def build(self, input_shape):
        shape = self._op_shape(input_shape)
        self.build_op(shape)
        if isinstance(self.estimator, estimators_lib.DAB) and self.differentiable:
            if self.approximator is None:
                self.approximator = self.default_approximator(shape)
            if not self.approximator.built:
                self.approximator.build(shape)

    def build_op(self, shape):
        """Hook for op-specific checks and weights, run by `build` before the approximator is built.

        Args:
            shape: The input shape with the op's axis moved last.
        """

    def _math_dtype(self):
        dtype = keras.backend.standardize_dtype(self.compute_dtype)
        return "float64" if dtype == "float64" else "float32"

    def check_input_dtype(self, inputs):
        """Raises `TypeError` unless `inputs` (a tensor or `KerasTensor`) is floating point.

        Args:
            inputs: A tensor or `KerasTensor`.

        Raises:
            TypeError: if `inputs.dtype` is not a floating-point dtype.
        """
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if not keras.backend.is_float_dtype(dtype):
            raise TypeError(
                f"{type(self).__name__} expects floating-point inputs (cast integers first, e.g. with "
                f"keras.ops.cast(x, 'float32')). Received: inputs.dtype={dtype}"
            )

    def op_inputs(self, inputs):
        """Checks the dtype, casts to the math dtype and moves the op's axis last.

        Args:
            inputs: The layer's input tensor (the layer must be built when it has an `axis`).

        Returns:
            `inputs` as float32 (float64 under a float64 policy) with the op's axis last.

        Raises:
            TypeError: for non-floating-point inputs.
        """
        self.check_input_dtype(inputs)
        x = ops.cast(inputs, self._math_dtype())
        if self.axis is not None and self._axis != len(x.shape) - 1:
            x = ops.moveaxis(x, self._axis, -1)
        return x

    def op_outputs(self, y, rank):
        """Moves the op's axis back (for outputs of the input's rank) and casts to the compute dtype.

        Args:
            y: The op's output, op axis last.
            rank: Rank of the layer's input. Outputs of another rank (a permutation matrix) keep their
                axes.

        Returns:
            `y` in the layer's layout and compute dtype.
        """
        if self.axis is not None and self._axis != rank - 1 and len(y.shape) == rank:
            y = ops.moveaxis(y, -1, self._axis)
        return ops.cast(y, self.compute_dtype)

    def perturb(self, x):
        """Hook applied to the op input before the op (e.g. Gumbel noise); identity by default.

        Args:
            x: The op's input, op axis last.

        Returns:
            The input the hard op, the estimator and the approximator see (`x` in the base class).
        """
        return x

    def call(self, inputs, training=None):
        x = self.perturb(self.op_inputs(inputs))
        hard = self.hard(x)
        out = self.estimator(self, x, hard, self.temperature) if training else hard
        return self.op_outputs(out, len(inputs.shape))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, training=None):
        # Symbolic calls (functional models) use the output shape without running `call`, so the dtype
        # check of `op_inputs` is repeated here to fail when the model is built, not at `fit`.
        self.check_input_dtype(inputs)
        return self.output_spec(inputs)

    def output_spec(self, inputs):
        """The symbolic output for `inputs`; override for outputs other than one compute-dtype tensor.

        Args:
            inputs: A `KerasTensor`.

        Returns:
            A `KerasTensor` of shape `compute_output_shape(inputs.shape)` and the compute dtype (a
            structure of them for layers with several outputs).
        """
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=self.compute_dtype)

    def _estimator_config(self):
        config = estimators_lib.serialize(self.estimator)
        if self.temperature is not None:
            # Save the current (possibly annealed) temperature, not the initial one; keep the exact float
            # given at construction while the float32 variable still holds it.
            value = float(ops.convert_to_numpy(self.temperature))
            if value != float(np.float32(self.estimator.temperature)):
                config["config"] = {**config["config"], "temperature": value}
        return config

    def get_config(self):
        return {**super().get_config(), "estimator": self._estimator_config()}
