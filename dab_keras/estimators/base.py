"""The estimator protocol and the one gradient override every estimator is built from."""

import typing

import keras
from keras import ops


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


class Bridgeable(typing.Protocol):
    """What an estimator needs from the layer that owns the op (implemented by `dab_keras.layers`).

    Estimators are stateless configuration; everything with state (temperature variable, approximator
    network, seed, losses) belongs to the layer and is reached through these members. Every
    `dab_keras.layers.DiscreteLayer` implements it; any object with these members works (a static
    protocol: `isinstance` checks are not supported).

    Attributes:
        approximator: The DAB approximator network (a Keras layer, built), or `None` when the estimator
            is not `DAB`.

    Examples:
        A minimal bridgeable op, the sign with its tanh relaxation, driven by estimators directly:

        >>> import numpy as np
        >>> import dab_keras
        >>> class TanhSign:
        ...     approximator = None
        ...     def relax(self, x, temperature):
        ...         return dab_keras.ops.soft_sign(x, temperature)
        ...     def identity_surrogate(self, x):
        ...         return x
        ...     def add_approximation_loss(self, loss, error):
        ...         pass
        >>> x = keras.ops.convert_to_tensor([-0.5, 2.0])
        >>> hard = dab_keras.ops.sign(x)
        >>> np.asarray(dab_keras.estimators.StraightThrough()(TanhSign(), x, hard, 1.0)).tolist()
        [-1.0, 1.0]
        >>> soft = dab_keras.estimators.Relaxed()(TanhSign(), x, hard, 1.0)
        >>> np.round(np.asarray(soft), 3).tolist()
        [-0.462, 0.964]
    """

    approximator: keras.layers.Layer | None

    def relax(self, x, temperature):
        """The op's continuous relaxation of the hard output, computed from `x`.

        Args:
            x: The op's input (float32 or float64, op axis last).
            temperature: τ > 0, the layer's temperature variable (or a float).

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

    def add_approximation_loss(self, loss, error):
        """Adds the DAB loss `loss` to the layer's losses and records the approximation `error`.

        Args:
            loss: Scalar tensor, γ times `error`, added with `add_loss` (it trains the approximator).
            error: Scalar tensor, the batch's mean per-example squared approximation error, recorded
                for the metric `<layer name>_approximation_error`.
        """


class Estimator:
    """Base class of gradient estimators: a rule for the training-time forward and backward.

    An estimator is called by a layer in training with the op's input `x` (float32, op axis last),
    the hard output `hard = h(x)`, and the layer's temperature variable; it returns the tensor the layer
    outputs. At inference every estimator gives `hard` (the layer does not call it).

    Subclasses set `name` (the string alias) and implement `__call__` and `get_config`; set
    `temperature` to a float to make the layer create its temperature variable. Register a subclass
    with `keras.saving.register_keras_serializable` to save layers that use it.

    Attributes:
        name: The estimator's string alias (`"straight_through"`, `"relaxed"`, `"dab"`), or `None`.
        temperature: Initial τ of the layer's temperature variable, or `None` for an estimator that
            needs none (the layer then has `temperature=None`).

    Examples:
        A custom estimator: hard forward, identity gradient (`StraightThrough(surrogate="identity")`):

        >>> import numpy as np
        >>> import dab_keras
        >>> class Identity(Estimator):
        ...     name = "identity"
        ...     def __call__(self, op, x, hard, temperature):
        ...         return bridge(hard, op.identity_surrogate(x))
        ...     def get_config(self):
        ...         return {}
        >>> layer = dab_keras.layers.Sign(estimator=Identity())
        >>> np.asarray(layer(np.array([[-0.5, 2.0]]), training=True)).tolist()
        [[-1.0, 1.0]]
        >>> Identity()
        Identity()
    """

    name = None
    temperature = None

    def __call__(self, op: Bridgeable, x, hard, temperature):
        """Returns the layer's training output: `hard` in value (or a relaxation), with a gradient rule.

        Args:
            op: The layer that owns the op (a `Bridgeable`): its relaxation, identity surrogate,
                approximator and loss hook.
            x: The op's input (float32 or float64, op axis last), after any perturbation (Gumbel noise).
            hard: The hard output `h(x)`.
            temperature: The layer's non-trainable temperature variable, or `None` when `self.temperature`
                is `None`.

        Returns:
            A tensor shaped like `hard`: the layer's output in training.
        """
        raise NotImplementedError

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
