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
        surrogate: Tensor of the same shape, through which the gradient flows.

    Returns:
        A tensor equal to `hard`.
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
    network, seed, losses) belongs to the layer and is reached through these members.
    """

    approximator: keras.layers.Layer | None

    def relax(self, x, temperature):
        """The op's continuous relaxation of the hard output, computed from `x`."""

    def identity_surrogate(self, x):
        """A tensor shaped like the hard output whose Jacobian is the identity, or `None`."""

    def add_approximation_loss(self, loss, error):
        """Adds the DAB loss `loss` to the layer's losses and records the approximation `error`."""


class Estimator:
    """Base class of gradient estimators: a rule for the training-time forward and backward.

    An estimator is called by a layer in training with the op's input `x` (float32, op axis last),
    the hard output `hard = h(x)`, and the layer's temperature variable; it returns the tensor the layer
    outputs. At inference every estimator gives `hard` (the layer does not call it).

    Subclasses set `name` (the string alias) and implement `__call__` and `get_config`.
    """

    name = None
    temperature = None

    def __call__(self, op: Bridgeable, x, hard, temperature):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
