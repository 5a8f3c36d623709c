"""`DiscreteLayer`: the Keras state shared by every op layer (estimator, temperature, approximator)."""

import warnings

import keras
import numpy as np
from keras import ops

from dab_keras import _validation
from dab_keras import estimators as estimators_lib

# Sublayers that `DiscreteLayer.save_own_variables` saves itself (under estimator-tagged keys) or that
# hold no weights, hidden from Keras's walk of saveable attributes.
_SAVED_BY_LAYER = ("estimator_state", "approximator", "metric_sums")


class DiscreteLayer(keras.layers.Layer):
    r"""Base class of layers that run a hard op and train through an estimator.

    A subclass defines the op: `hard(x)` (the exact forward), `relax(x, temperature)` (its continuous
    relaxation), optionally `identity_surrogate(x)` and `default_approximator(shape)`. For ops along an
    axis it sets `self.axis`; the base class then moves that axis last before the op (so `x` in these
    methods always has the op's axis last) and back afterwards. Math runs in float32 (float64 stays
    float64) whatever the dtype policy; outputs are cast to the layer's compute dtype.

    At inference (`training` false or unset) the layer returns the hard output for every estimator. In
    training it returns `estimator(self, x, hard, temperature)`.

    State: the estimator creates what it needs for this layer in `build`
    (`estimator.build(layer, op_shape)`, see `dab_keras.estimators.Estimator`), tracked as the sublayer
    `estimator_state`; `temperature` and `approximator` read it (`None` when the estimator has none).
    `TemperatureSchedule` anneals `temperature`. The layer's `metrics` include the state's (DAB's
    `approximation_error` and `dab_loss`).

    Weight files are portable across estimators: the layer saves its own weights (e.g. a codebook)
    under Keras's usual keys and its estimator state under keys tagged with the estimator's class. Loading
    weights saved with another estimator (`load_weights`, `.weights.h5` or `.keras`) loads the layer's
    own weights, skips the other estimator's state, starts this one's fresh and says so in one warning.

    Args:
        estimator: `"straight_through"` (alias `"ste"`), `"relaxed"`, `"dab"`, or a
            `dab_keras.estimators.Estimator`. Defaults to `"straight_through"`.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Raises:
        ValueError: for an unknown `estimator`; when built, for inputs of rank < `min_rank` (1 for
            element-wise ops, else 2), an `axis` out of range or equal to the batch axis, or an unknown
            size along `axis`.
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
        >>> layer = Round(estimator="relaxed")
        >>> _ = layer(np.array([[0.4, 1.6]]))
        >>> float(layer.temperature)  # relaxed: a temperature variable in the estimator state
        1.0
    """

    axis = None
    min_rank = 2  # 1 for element-wise ops, which accept (batch,) inputs
    differentiable = True  # False for outputs no estimator can carry a gradient through (indices)

    def __init__(self, estimator="straight_through", **kwargs):
        super().__init__(**kwargs)
        self.estimator = estimators_lib.get(estimator)
        self.estimator_state = None
        self._sampled_logits = None

    @property
    def temperature(self):
        """The estimator state's non-trainable τ variable, or `None` (no such state, or not built)."""
        return getattr(self.estimator_state, "temperature", None)

    @property
    def approximator(self):
        """The estimator state's approximator network (DAB), or `None`."""
        return getattr(self.estimator_state, "approximator", None)

    @property
    def metrics(self):
        """Keras's layer metrics plus `reported_metrics()` (reported once, by this layer).

        Returns:
            A list of `keras.metrics.Metric`.
        """
        return [*super().metrics, *self.reported_metrics()]

    def reported_metrics(self):
        """Metrics computed in the forward pass: the estimator state's and the op's own.

        Returns:
            A list of `keras.metrics.Metric` (they are also in `metrics`, hence in `fit` logs).
        """
        state = self.estimator_state
        return [] if state is None else list(state.reported_metrics())

    def __dir__(self):
        return [name for name in super().__dir__() if name not in _SAVED_BY_LAYER]

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

    def sample_mean(self, logits):
        """The mean of the op's sample given its logits, E[hard(logits + noise)], or `None`.

        Ops that draw samples (`ArgMax`: Gumbel noise, a categorical sample; `Sign`: logistic noise, a
        ±1 bit) return it; the ReinMax surrogate (`surrogate="reinmax"`) needs it and its inverse
        `sample_logits_of_mean`.

        Args:
            logits: The sample's logits, op axis last.

        Returns:
            `None` in the base class (the op defines no sampling distribution).
        """
        return None

    def sample_logits_of_mean(self, mean):
        """Logits whose `sample_mean` is `mean` (the inverse of `sample_mean`); `None` in the base class.

        Args:
            mean: A mean of the op's sample (strictly inside its range).

        Returns:
            Logits shaped like `mean`, or `None`.
        """
        return None

    @property
    def sampled_logits(self):
        """The logits ℓ of the sample the layer is drawing (inside a sampling call), else `None`.

        Set while the op runs on ℓ + noise (`ArgMax(stochastic=True)` in training, or a call with
        `noise=`), so an estimator can read the distribution the hard output was drawn from.
        """
        return self._sampled_logits

    def run_sample(self, logits, noise, training, rank):
        """Runs the op on `logits + noise` (op axis last), with `sampled_logits` set to `logits` meanwhile.

        Args:
            logits: The sample's logits, op axis last.
            noise: The perturbation, shaped like `logits`.
            training: Whether the layer runs in training.
            rank: Rank of the layer's input.

        Returns:
            What `run_op` returns.
        """
        self._sampled_logits = logits
        try:
            return self.run_op(logits + noise, training, rank)
        finally:
            self._sampled_logits = None

    def noise_inputs(self, noise, x):
        """`noise` in the op's layout (axis last) and math dtype, checked against the op input `x`.

        Args:
            noise: The caller's noise, in the layer's input layout.
            x: The op's input (`op_inputs(inputs)`), op axis last.

        Returns:
            `noise` cast to `x`'s dtype with the op axis last.

        Raises:
            ValueError: if `noise` is not shaped like the inputs.
        """
        noise = ops.cast(noise, x.dtype)
        if self.axis is not None and self._axis != len(noise.shape) - 1:
            noise = ops.moveaxis(noise, self._axis, -1)
        if tuple(noise.shape) != tuple(x.shape) and None not in tuple(noise.shape) + tuple(x.shape):
            raise ValueError(f"`noise` must have the inputs' shape {tuple(x.shape)}. "
                             f"Received: noise.shape={tuple(noise.shape)}")
        return noise

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

    # ------------------------------------------------------------------ Keras plumbing
    def _op_shape(self, input_shape):
        """Validates `input_shape` and returns it with the op's axis moved last."""
        input_shape = tuple(input_shape)
        if len(input_shape) < self.min_rank:
            form = "(batch, ...)" if self.min_rank == 1 else "(batch, features...)"
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank >= {self.min_rank} {form}. "
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
        if self.differentiable:
            state = self.estimator.build(self, shape)
            if not isinstance(state, estimators_lib.EstimatorState):
                raise TypeError(
                    f"`{type(self.estimator).__name__}.build` must return a "
                    f"dab_keras.estimators.EstimatorState. Received: {state!r}"
                )
            self.estimator_state = state

    def build_op(self, shape):
        """Hook for op-specific checks and weights, run by `build` before the estimator state is built.

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

    def forward(self, x):
        """The hard output and any by-product the op computes with it (`finish` receives both).

        Args:
            x: The op's input, op axis last, after `perturb`.

        Returns:
            `(hard(x), None)` in the base class.
        """
        return self.hard(x), None

    def finish(self, outputs, x, hard, extra, training):
        """Hook on the layer's output (extra outputs, op losses, op metrics); returns `outputs` here.

        Args:
            outputs: The layer's output in its layout and compute dtype.
            x: The op's input, op axis last.
            hard: The hard output.
            extra: The by-product returned by `forward`.
            training: Whether the layer runs in training.

        Returns:
            What the layer returns.
        """
        return outputs

    def call(self, inputs, training=None):
        return self.run_op(self.perturb(self.op_inputs(inputs)), training, len(inputs.shape))

    def run_op(self, x, training, rank):
        """The op on prepared inputs: `forward`, the estimator (or `hard`), `op_outputs`, `finish`.

        Args:
            x: The op's input, op axis last, after any perturbation.
            training: Whether the layer runs in training.
            rank: Rank of the layer's input.

        Returns:
            What the layer returns.
        """
        hard, extra = self.forward(x)
        outputs = self.op_outputs(self.bridge(x, hard, training), rank)
        return self.finish(outputs, x, hard, extra, training)

    def bridge(self, x, hard, training):
        """The estimator's training output, or `hard` at inference (where the estimator may observe).

        Args:
            x: The op's input, op axis last, after `perturb`.
            hard: The hard output `hard(x)`.
            training: Whether the layer runs in training.

        Returns:
            A tensor shaped like `hard`.
        """
        if training:
            return self.estimator(self, x, hard, self.estimator_state)
        self.estimator.observe(self, x, hard, self.estimator_state)
        return hard

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

    # ------------------------------------------------------------------ weight files
    def _state_tag(self):
        return self.estimator.state_tag

    def _state_variables(self):
        state = self.estimator_state
        return [] if state is None else list(state.weights)

    def save_own_variables(self, store):
        """Saves the op's own weights as `"0"`, `"1"`, ... and the estimator state as `"<Estimator>.i"`.

        Args:
            store: Keras's weights store for this layer.
        """
        super().save_own_variables(store)
        tag = self._state_tag()
        for i, variable in enumerate(self._state_variables()):
            store[f"{tag}.{i}"] = variable

    def load_own_variables(self, store):
        """Loads the op's own weights, and the estimator state when saved with the same estimator.

        State saved by another estimator is skipped and this layer's starts fresh (its initial values),
        with one warning naming the layer. Files written before the estimator state was tagged (the op's
        weights, temperature and DAB error sums as `"0"`, `"1"`, ..., the approximator as a sublayer) load
        too.

        Args:
            store: Keras's weights store for this layer.

        Raises:
            ValueError: if the number of the op's own weights differs from the file's.
        """
        keys = list(store.keys())
        own = self._trainable_variables + self._non_trainable_variables
        op_keys = [k for k in keys if k.isdigit()]
        state_keys = [k for k in keys if not k.isdigit()]
        if not state_keys and len(op_keys) > len(own):
            self._load_untagged(store, len(op_keys))
            return
        if len(op_keys) != len(own):
            raise ValueError(
                f"Layer '{self.name}' expected {len(own)} variables, but received {len(op_keys)} "
                "variables during loading."
            )
        for i, variable in enumerate(own):
            variable.assign(store[str(i)])
        mine = self._state_variables()
        tag = self._state_tag()
        expected = [f"{tag}.{i}" for i in range(len(mine))]
        if sorted(state_keys) == sorted(expected) and all(
            tuple(store[k].shape) == tuple(v.shape) for k, v in zip(expected, mine)
        ):
            for key, variable in zip(expected, mine):
                variable.assign(store[key])
            return
        self._warn_fresh_state(sorted({k.rsplit(".", 1)[0] for k in state_keys}), len(state_keys))

    def _warn_fresh_state(self, saved_tags, skipped):
        mine = self._state_variables()
        fresh = ", ".join(v.path.split(f"{self.name}/", 1)[-1] for v in mine) or "nothing"
        saved = ", ".join(saved_tags) or "no estimator"
        warnings.warn(
            f"Layer '{self.name}' ({type(self).__name__}, estimator {self._state_tag()}): the weights were "
            f"saved with {saved} state; loaded the layer's own weights, skipped {skipped} saved state "
            f"variable(s), started fresh: {fresh}.",
            stacklevel=2,
        )

    def _load_untagged(self, store, count):
        """Loads a file from before tagged estimator state: `[trainable op weights, τ?, DAB sums?, ...]`."""
        trainable = list(self._trainable_variables)
        rest = list(self._non_trainable_variables)
        extra = count - len(trainable) - len(rest)
        for i, variable in enumerate(trainable):
            variable.assign(store[str(i)])
        extras = [store[str(len(trainable) + j)] for j in range(extra)]
        for j, variable in enumerate(rest):
            variable.assign(store[str(len(trainable) + extra + j)])
        # The extras were the temperature (if the estimator had one) then DAB's two error sums.
        loaded = []
        if self.temperature is not None and extra in (1, 3):
            self.temperature.assign(extras[0])
            loaded.append(self.temperature)
        approximator = self.approximator
        path = getattr(store, "_h5_entry_path", None)
        if approximator is not None and path is not None and f"{path}/approximator" in store.h5_file:
            from keras.src.saving import saving_lib  # the approximator was saved as a sublayer

            saving_lib._load_state(approximator, store, None, inner_path=f"{path}/approximator")
            loaded.extend(approximator.weights)
        if len(loaded) != len(self._state_variables()):
            self._warn_fresh_state(["an untagged"], extra)
