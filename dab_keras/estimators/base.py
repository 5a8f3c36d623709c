"""The estimator protocol and the one gradient override every estimator is built from."""

import typing

import keras
from keras import ops

from dab_keras.estimators.state import EstimatorState


def bridge(hard, surrogate):
    r"""Returns `hard` in the forward pass and routes the gradient to `surrogate`.

    $$ y = h, \qquad \frac{\partial L}{\partial s} = \frac{\partial L}{\partial y}, \qquad
    \frac{\partial L}{\partial h} = 0. $$

    Autodiff then carries the gradient from the surrogate `s` back to whatever `s` was computed from, so
    the backward pass is $J_s(x)^\top \cdot$ upstream. The value is exactly `hard` (no
    `x + (h - x)` round-off). Implemented with `keras.ops.custom_gradient` (`tf.custom_gradient` on
    TensorFlow, `jax.custom_gradient` on JAX).

    Args:
        hard: Tensor, the forward value (gets no gradient).
        surrogate: Tensor of the same shape, through which the gradient flows (the upstream gradient is
            cast to its dtype).

    Returns:
        A tensor equal to `hard` (its value and dtype) whose gradient goes to `surrogate`.

    Examples:
        A straight-through sign: the value of `sign(x)`, the gradient of the identity (`x` itself):

        >>> import numpy as np
        >>> import dab_keras
        >>> x = keras.ops.convert_to_tensor([-0.5, 2.0])
        >>> np.asarray(bridge(dab_keras.ops.sign(x), x)).tolist()
        [-1.0, 1.0]
    """

    @ops.custom_gradient
    def _bridge(hard, surrogate):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return ops.zeros_like(hard), ops.cast(upstream, surrogate.dtype)

        return hard, grad

    return _bridge(ops.stop_gradient(hard), surrogate)


SURROGATES = ("auto", "identity", "relaxation", "reinmax")


def reinmax_surrogate(op, logits, hard):
    r"""ReinMax's gradient for a sample drawn from logits ℓ, as a tensor that is zero in value.

    With $\mu$ the sample's mean given its logits (`op.sample_mean`: softmax for a categorical sample,
    $\tanh(\ell/2)$ for a ±1 bit), $\pi_0 = \mu(\ell)$ and the midpoint $\pi_1 = (D + \pi_0)/2$
    between the mean and the hard sample D, the returned tensor's vector-Jacobian product is

    $$ \nabla_\ell = 2\, J_\mu(\mu^{-1}(\pi_1))^\top u - \tfrac12\, J_\mu(\ell)^\top u, $$

    Heun's (second-order) approximation of the gradient of $E[f(D)]$ where straight-through's
    $J_\mu(\ell)^\top u$ is the first-order one (Liu et al.'s ReinMax with τ = 1). $J_\mu$ at
    $\mu^{-1}(\pi_1)$ comes from $\mu(\operatorname{sg}(\mu^{-1}(\pi_1) - \ell) + \ell)$: its value is
    $\pi_1$, its Jacobian $\mu$'s there.

    Args:
        op: The sampling layer (it defines `sample_mean` and `sample_logits_of_mean`).
        logits: ℓ, op axis last (the gradient flows to it).
        hard: The sample D drawn from ℓ, shaped like `logits` (no gradient).

    Returns:
        A tensor shaped like `logits`, zero in value.

    Examples:
        A categorical sample's ReinMax gradient through `ArgMax` called with the caller's Gumbel noise
        (zero in value, so the layer's output is the hard sample):

        >>> import numpy as np
        >>> import dab_keras
        >>> layer = dab_keras.layers.ArgMax()
        >>> logits = keras.ops.convert_to_tensor([[1.0, 0.0, -1.0]])
        >>> sample = keras.ops.convert_to_tensor([[0.0, 1.0, 0.0]])
        >>> np.asarray(reinmax_surrogate(layer, logits, sample)).tolist()
        [[0.0, 0.0, 0.0]]
        >>> estimator = dab_keras.estimators.StraightThrough(surrogate="reinmax")
        >>> noise = np.array([[0.0, 3.0, 0.0]], "float32")
        >>> np.asarray(dab_keras.layers.ArgMax(estimator=estimator)(logits, training=True, noise=noise)).tolist()
        [[0.0, 1.0, 0.0]]

    References:
        Liu, Zhao, Cheng, Gao & Han, "Bridging Discrete and Backpropagation: Straight-Through and
        Beyond", NeurIPS 2023, arXiv:2304.08612.
    """
    mean = op.sample_mean(logits)
    midpoint = (ops.stop_gradient(ops.cast(hard, mean.dtype)) + ops.stop_gradient(mean)) / 2.0
    shifted = op.sample_mean(ops.stop_gradient(op.sample_logits_of_mean(midpoint) - logits) + logits)
    s = 2.0 * shifted - 0.5 * mean
    return s - ops.stop_gradient(s)


def default_surrogate(op, x, temperature, surrogate="auto"):
    r"""The op's straight-through surrogate $s(x)$: its identity surrogate if it has one, else its relaxation.

    This is the surrogate of `StraightThrough(surrogate=...)` and the start of a residual `DAB`'s
    approximator. With `"auto"`: the identity for `Sign`, `Quantize` and `VectorQuantize`, the relaxation
    at temperature τ for `ArgMax`, `Sort` and `TopK`.

    Args:
        op: The layer that owns the op (a `Bridgeable`).
        x: The op's input (op axis last).
        temperature: τ of the relaxation (a float or scalar tensor), used when the relaxation is chosen.
        surrogate: `"auto"` (the identity where the op has one, the relaxation otherwise), `"identity"`,
            `"relaxation"` (e.g. tanh for `Sign`: with a stochastic input, the straight-through of
            the binary Concrete) or `"reinmax"` (for a sample: the relaxation's value with ReinMax's
            gradient, `reinmax_surrogate`). Defaults to `"auto"`.

    Returns:
        A tensor shaped like the op's hard output, differentiable in `x`.

    Raises:
        ValueError: for `surrogate="identity"` when the op has no identity surrogate, or
            `surrogate="reinmax"` outside a sampling call.

    Examples:
        >>> import numpy as np
        >>> import dab_keras
        >>> x = keras.ops.convert_to_tensor([[2.0, 0.0]])
        >>> np.asarray(default_surrogate(dab_keras.layers.Sign(), x, 1.0)).tolist()  # the identity
        [[2.0, 0.0]]
        >>> np.asarray(default_surrogate(dab_keras.layers.ArgMax(), x, 1.0)).round(3).tolist()  # softmax
        [[0.881, 0.119]]
        >>> np.asarray(default_surrogate(dab_keras.layers.Sign(), x, 1.0, "relaxation")).round(3).tolist()
        [[0.964, 0.0]]
    """
    if surrogate == "reinmax":
        logits = getattr(op, "sampled_logits", None)
        if logits is None or op.sample_mean(logits) is None:
            raise ValueError(
                "surrogate='reinmax' needs a sample whose logits the layer knows: ArgMax(stochastic=True) "
                "in training, or ArgMax / Sign (margin 0) called with noise=. "
                f"Received: a {type(op).__name__} call without one"
            )
        # The value is the relaxation's (what a residual DAB corrects); the gradient is ReinMax's.
        return ops.stop_gradient(op.relax(x, temperature)) + reinmax_surrogate(op, logits, op.hard(x))
    s = None if surrogate in ("relaxation", "reinmax") else op.identity_surrogate(x)
    if s is not None:
        return s
    if surrogate == "identity":
        raise ValueError(
            f"{type(op).__name__} has no identity surrogate (its output is not a hard copy of the "
            "input's values but, e.g., a one-hot or a permutation); use surrogate='relaxation' or "
            "'auto'. Received: surrogate='identity'"
        )
    return op.relax(x, temperature)


class Bridgeable(typing.Protocol):
    """What an estimator needs from the layer that owns the op (implemented by `dab_keras.layers`).

    Estimators are configuration; the state they need for a layer (temperature variable, approximator
    network, running sums) is created by `Estimator.build` and handed back to every call, and losses go
    through the layer's `add_loss`. Every `dab_keras.layers.DiscreteLayer` implements this; any object
    with these members works (a static protocol: `isinstance` checks are not supported).

    Examples:
        A minimal bridgeable op, the sign with its tanh relaxation, driven by estimators directly:

        >>> import numpy as np
        >>> import dab_keras
        >>> class TanhSign:
        ...     def relax(self, x, temperature):
        ...         return dab_keras.ops.soft_sign(x, temperature)
        ...     def identity_surrogate(self, x):
        ...         return x
        >>> x = keras.ops.convert_to_tensor([-0.5, 2.0])
        >>> hard = dab_keras.ops.sign(x)
        >>> state = dab_keras.estimators.EstimatorState(temperature=1.0)
        >>> np.asarray(dab_keras.estimators.StraightThrough()(TanhSign(), x, hard, state)).tolist()
        [-1.0, 1.0]
        >>> soft = dab_keras.estimators.Relaxed()(TanhSign(), x, hard, state)
        >>> np.round(np.asarray(soft), 3).tolist()
        [-0.462, 0.964]
    """

    name: str
    dtype_policy: typing.Any

    def relax(self, x, temperature):
        """The op's continuous relaxation of the hard output, computed from `x`.

        Args:
            x: The op's input (float32 or float64, op axis last).
            temperature: τ > 0, a float32 scalar (variable or tensor) or a float.

        Returns:
            A differentiable tensor shaped like the hard output.
        """

    def identity_surrogate(self, x):
        """A tensor shaped like the hard output whose Jacobian is the identity, or `None`.

        Args:
            x: The op's input (float32 or float64, op axis last).

        Returns:
            `x` itself for ops whose output is a hard copy of the input's values (`Sign`, `Quantize`,
            `VectorQuantize`), else `None`: no identity surrogate (for one-hots, masks, permutations).
        """

    def default_approximator(self, shape):
        """A new, unbuilt DAB approximator for op inputs of `shape` (op axis last).

        Args:
            shape: The op input's shape with the op's axis last, batch axis first (`None`).

        Returns:
            A Keras layer mapping such inputs to tensors shaped like the hard output.
        """

    def add_loss(self, loss):
        """Adds a scalar loss to the model's total loss (`keras.layers.Layer.add_loss`).

        Args:
            loss: A scalar tensor.
        """


class Estimator:
    r"""Base class of gradient estimators: a rule for the training-time forward and backward.

    The protocol has two steps:

    1. `build(layer, op_shape)`, run once by each op layer when it builds, creates the state the
       estimator needs *for that layer* and returns it as a `dab_keras.estimators.EstimatorState` (a
       Keras layer). The op layer tracks it as `layer.estimator_state`, so its weights train and save
       with the layer. One estimator object (or one string alias) given to several layers gives each
       layer its own state: estimators hold configuration only.
    2. `__call__(op, x, hard, state)`, run by the op layer in training with the op's input `x`
       (float32, op axis last), the hard output `hard = h(x)` and the layer's state, returns the tensor
       the layer outputs. At inference the layer outputs `hard` for every estimator and calls
       `observe(op, x, hard, state)`, which may update metrics (DAB's approximation error).

    The base `build` gives a state with a non-trainable `temperature` variable when `self.temperature`
    is a float (annealed by `dab_keras.callbacks.TemperatureSchedule`), none otherwise. Subclasses set
    `name` (the string alias) and implement `__call__` and `get_config`. Register a subclass with
    `keras.saving.register_keras_serializable` to save layers that use it.

    Attributes:
        name: The estimator's string alias (`"straight_through"`, `"relaxed"`, `"dab"`), or `None`.
        temperature: Initial τ of the state's temperature variable, or `None` for an estimator that
            needs none.
        inference_only: `True` for estimators of inference-only models (`InferenceOnly`): layers then
            keep no metric state either.

    Examples:
        A custom estimator: hard forward, identity gradient (`StraightThrough(surrogate="identity")`):

        >>> import numpy as np
        >>> import dab_keras
        >>> class Identity(Estimator):
        ...     name = "identity"
        ...     def __call__(self, op, x, hard, state):
        ...         return bridge(hard, op.identity_surrogate(x))
        ...     def get_config(self):
        ...         return {}
        >>> layer = dab_keras.layers.Sign(estimator=Identity())
        >>> np.asarray(layer(np.array([[-0.5, 2.0]]), training=True)).tolist()
        [[-1.0, 1.0]]
        >>> Identity()
        Identity()

        A stateful one, a relaxation with a *learned* temperature $\tau = e^{s}$: `build` gives each
        layer its own trainable `log_temperature`, which then trains and saves with the layer:

        >>> @keras.saving.register_keras_serializable(package="docs")
        ... class LearnedTemperature(Estimator):
        ...     name = "learned_temperature"
        ...     def __init__(self, initial=1.0):
        ...         self.initial = float(initial)
        ...     def build(self, layer, op_shape):
        ...         state = dab_keras.estimators.EstimatorState(name="estimator_state")
        ...         state.log_temperature = state.add_weight(
        ...             shape=(), initializer=keras.initializers.Constant(np.log(self.initial)),
        ...             name="log_temperature")
        ...         return state
        ...     def __call__(self, op, x, hard, state):
        ...         return bridge(hard, op.relax(x, keras.ops.exp(state.log_temperature)))
        ...     def get_config(self):
        ...         return {"initial": self.initial}
        >>> layer = dab_keras.layers.ArgMax(estimator=LearnedTemperature(0.5))
        >>> x = keras.ops.convert_to_tensor([[0.1, 0.7, 0.2]])
        >>> np.asarray(layer(x, training=True)).tolist()
        [[0.0, 1.0, 0.0]]
        >>> [w.name for w in layer.trainable_weights]
        ['log_temperature']
    """

    name = None
    temperature = None
    inference_only = False

    @property
    def state_tag(self):
        """The prefix of this estimator's state keys in weight files (default: the class name).

        A layer loads saved estimator state only when the file's tag is this one (otherwise its state
        starts fresh, with a warning), so estimators whose state means different things under the same
        shapes must have different tags.

        Returns:
            A string.
        """
        return type(self).__name__

    def build(self, layer, op_shape):
        """Creates the state this estimator needs for `layer` (called by the layer's `build`).

        Args:
            layer: The op layer (a `Bridgeable`, e.g. a `dab_keras.layers.DiscreteLayer`), built up to
                its own weights.
            op_shape: The op input's shape with the op's axis last, batch axis first.

        Returns:
            A new `dab_keras.estimators.EstimatorState` (name it `"estimator_state"`), with a
            `temperature` variable when `self.temperature` is not `None`.
        """
        del op_shape
        return EstimatorState(temperature=self.temperature, dtype=layer.dtype_policy, name="estimator_state")

    def __call__(self, op: Bridgeable, x, hard, state):
        """Returns the layer's training output: `hard` in value (or a relaxation), with a gradient rule.

        Args:
            op: The layer that owns the op (a `Bridgeable`): its relaxation, identity surrogate and
                `add_loss`.
            x: The op's input (float32 or float64, op axis last), after any perturbation (Gumbel noise).
            hard: The hard output `h(x)`.
            state: The `EstimatorState` that `build` made for this layer.

        Returns:
            A tensor shaped like `hard`: the layer's output in training.
        """
        raise NotImplementedError

    def observe(self, op: Bridgeable, x, hard, state):
        """Runs at inference, where the layer outputs `hard`: a hook to update metrics (nothing here).

        Args:
            op: The layer that owns the op.
            x: The op's input (op axis last), after any perturbation.
            hard: The hard output `h(x)`, which the layer returns.
            state: The `EstimatorState` that `build` made for this layer.
        """
        del op, x, hard, state

    def get_config(self):
        """The constructor arguments of this estimator.

        Returns:
            A JSON-serializable dict such that `type(self).from_config(config)` rebuilds the estimator.
        """
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        """Builds an estimator from the dict of `get_config`.

        Args:
            config: A dict of constructor arguments.

        Returns:
            A new instance of `cls`.
        """
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="dab_keras.estimators", name="InferenceOnly")
class InferenceOnly(Estimator):
    """An estimator without state or gradient, for models that only run inference.

    `dab_keras.export_inference` gives it to every hard layer of the exported model, which then holds
    no estimator state (no temperature, approximator or running sums). In training it returns the hard
    output with a zero gradient (`stop_gradient`): fine-tune the original model, not the export.

    Examples:
        >>> import numpy as np
        >>> import dab_keras
        >>> layer = dab_keras.layers.Sign(estimator=InferenceOnly())
        >>> np.asarray(layer(np.array([[-0.5, 2.0]]))).tolist(), layer.weights
        ([[-1.0, 1.0]], [])
    """

    name = "inference_only"
    inference_only = True

    def __call__(self, op, x, hard, state):
        return ops.stop_gradient(hard)

    def get_config(self):
        return {}
