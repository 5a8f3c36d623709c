"""DAB estimator: a learned approximator network bridges the non-differentiable op."""

import keras
from keras import ops

from dab_keras import _validation
from dab_keras.estimators.base import Estimator, bridge


def approximator_output(approximator, x):
    r"""Runs `approximator` on `x` with its weights held constant: gradient flows to `x` only.

    The approximator is called through `stateless_call` with stop-gradient copies of its trainable
    weights, so the result's vector-Jacobian product is $J_g(x)^\top u$ and no task gradient reaches
    g's weights.

    Args:
        approximator: A built Keras layer or model g.
        x: The op's input (cast to the approximator's compute dtype).

    Returns:
        $g(x)$ as float32.
    """
    weights = [ops.stop_gradient(v.value) for v in approximator.trainable_variables]
    states = [v.value for v in approximator.non_trainable_variables]
    inputs = ops.cast(x, approximator.compute_dtype)
    outputs, _ = approximator.stateless_call(weights, states, inputs)
    return ops.cast(outputs, "float32")


def approximation_error(approximator, x, hard):
    r"""Per-batch mean of the per-example squared error $\sum (g(x) - h(x))^2$, training g only.

    The input is stop-gradient, so the error's gradient reaches g's weights and not `x`.

    Args:
        approximator: A built Keras layer or model g.
        x: The op's input, `(batch, ...)`.
        hard: The hard output $h(x)$, shaped like $g(x)$ (no gradient flows into it).

    Returns:
        A float32 scalar: $\frac1B \sum_b \lVert g(x_b) - h(x_b) \rVert^2$ (the sum runs over all
        non-batch axes; for a rank-1 output, the mean of the squared errors).
    """
    g = ops.cast(approximator(ops.stop_gradient(ops.cast(x, approximator.compute_dtype))), "float32")
    squared = ops.square(g - ops.stop_gradient(ops.cast(hard, "float32")))
    axes = tuple(range(1, len(squared.shape)))
    return ops.mean(ops.sum(squared, axis=axes) if axes else squared)


@keras.saving.register_keras_serializable(package="dab_keras.estimators", name="DAB")
class DAB(Estimator):
    r"""Differentiable approximation bridge: hard forward, a learned approximator's gradient backward.

    A small network $g$ (the approximator) is trained to imitate the hard op $h$; the layer outputs
    $h(x)$ and back-propagates through $g$:

    $$ y = h(x), \qquad \frac{\partial L}{\partial x} = J_g(x)^\top \frac{\partial L}{\partial y},
    \qquad L_{\text{DAB}} = \gamma \cdot \frac1B \sum_{b=1}^{B} \lVert g(x_b) - h(x_b) \rVert_2^2. $$

    The layer adds $L_{\text{DAB}}$ with `add_loss`; it trains g only (its gradient w.r.t. x is zero,
    as in the reference code), and the task loss never reaches g's weights. The approximator is not run
    at inference. Its squared error is reported as the metric `<layer name>_approximation_error`.

    Default approximators (built by the layer when `approximator=None`): an element-wise tanh MLP for
    `Sign` and `Quantize`, a dense tanh MLP over the op's axis for `ArgMax`, `Sort`, `TopK` and over the
    code dimension for `VectorQuantize` (`dab_keras.layers.approximators`).

    Args:
        approximator: Optional Keras layer or model mapping the op's input (with the op's axis last) to a
            tensor shaped like its hard output. Used as given, not cloned: pass a fresh one per layer.
            Defaults to `None` (the layer's default approximator).
        gamma: Weight γ >= 0 of the DAB loss. That loss alone trains g, so γ scales g's gradient: with
            Adam or RMSprop (invariant to a constant scale) it changes only the reported loss, with SGD
            it is g's learning-rate factor, and `0` leaves g untrained. Defaults to `10.0` (the paper's).

    Raises:
        ValueError: if `approximator` is neither `None` nor a Keras layer, or `gamma` is not a finite
            number >= 0.

    Examples:
        >>> import numpy as np
        >>> import dab_keras
        >>> layer = dab_keras.layers.Sign(margin=0.5, estimator=DAB(gamma=10.0))
        >>> np.asarray(layer(np.array([[-1.0, 0.2, 0.7]]), training=True)).tolist()
        [[-1.0, 0.0, 1.0]]
        >>> len(layer.losses)  # γ times the approximator's squared error, added in training
        1

    References:
        Ramapuram & Webb, "Improving Discrete Latent Representations With Differentiable Approximation
        Bridges", 2019, arXiv:1905.03658.
    """

    name = "dab"

    def __init__(self, approximator=None, gamma=10.0):
        if approximator is not None and not isinstance(approximator, keras.layers.Layer):
            raise ValueError(
                "`approximator` must be a Keras layer or model (or None for the default). "
                f"Received: approximator={approximator!r}"
            )
        self.approximator = approximator
        self.gamma = _validation.check_non_negative_float("gamma", gamma)

    def __call__(self, op, x, hard, temperature):
        if op.approximator.trainable:
            # A frozen approximator (e.g. a frozen pretrained layer) keeps bridging gradients but is
            # not fitted any more, so it adds no loss and records no error.
            error = approximation_error(op.approximator, x, hard)
            op.add_approximation_loss(self.gamma * error, error)
        return bridge(hard, approximator_output(op.approximator, x))

    def __repr__(self):
        approximator = None if self.approximator is None else f"<{self.approximator.name}>"
        return f"DAB(approximator={approximator}, gamma={self.gamma!r})"

    def get_config(self):
        approximator = self.approximator
        if approximator is not None:
            approximator = keras.saving.serialize_keras_object(approximator)
        return {"approximator": approximator, "gamma": self.gamma}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("approximator") is not None:
            config["approximator"] = keras.saving.deserialize_keras_object(config["approximator"])
        return cls(**config)
