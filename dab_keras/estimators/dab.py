"""DAB estimator: a learned approximator network bridges the non-differentiable op."""

import keras
from keras import ops

from dab_keras import _validation
from dab_keras.estimators.base import Estimator, bridge
from dab_keras.estimators.state import EstimatorState, RunningSums, SumsMetric


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

    The layer adds $L_{\text{DAB}}$'s gradient with `add_loss` (as $L - \operatorname{sg}(L)$: zero in
    value, so the logged `loss` is the task loss for every estimator); it trains g only (its gradient
    w.r.t. x is zero, as in the reference code), and the task loss never reaches g's weights. The
    layer's output never depends on g at inference; g runs there only to report its error. The error and
    the DAB loss are logged as `approximation_error` and `dab_loss` (`DABState`), in training and
    evaluation.

    Each layer gets its own approximator from `build` (a `DABState`): the layer's default, or a copy of
    `approximator` (config and, when built, weights), so one estimator object can serve many layers.

    Default approximators (built by the layer when `approximator=None`): an element-wise tanh MLP for
    `Sign` and `Quantize`, a dense tanh MLP over the op's axis for `ArgMax`, `Sort`, `TopK` and over the
    code dimension for `VectorQuantize` (`dab_keras.layers.approximators`).

    Args:
        approximator: Optional Keras layer or model mapping the op's input (with the op's axis last) to a
            tensor shaped like its hard output: a template that each layer copies. Defaults to `None`
            (the layer's default approximator).
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
        >>> len(layer.losses)  # the DAB loss's gradient (zero in value), added in training
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

    def build(self, layer, op_shape):
        """Creates `layer`'s approximator and running sums (see `DABState`).

        The approximator is the layer's default (`layer.default_approximator(op_shape)`) or a copy of the
        `approximator` given to this estimator (rebuilt from its config, with its weights when it is
        built): the estimator keeps a template, each layer owns its own network.

        Args:
            layer: The op layer.
            op_shape: The op input's shape, op axis last.

        Returns:
            A `DABState`.
        """
        if self.approximator is None:
            approximator = layer.default_approximator(op_shape)
        else:
            approximator = _copy_layer(self.approximator)
        state = DABState(approximator, self.gamma, layer.name, dtype=layer.dtype_policy, name="estimator_state")
        if not approximator.built:
            approximator.build(op_shape)
        if self.approximator is not None and self.approximator.built:
            for target, source in zip(approximator.weights, self.approximator.weights):
                target.assign(ops.convert_to_numpy(source))  # a copy: JAX may donate buffers
        return state

    def __call__(self, op, x, hard, state):
        approximator = state.approximator
        if approximator.trainable:
            # A frozen approximator (e.g. a frozen pretrained layer) keeps bridging gradients but is
            # not fitted any more: it adds no loss (its error is still reported).
            error = approximation_error(approximator, x, hard)
            loss = self.gamma * error
            # Zero in value, the DAB loss's gradient: the logged `loss` stays the task loss, g trains.
            op.add_loss(loss - ops.stop_gradient(loss))
        else:
            error = ops.stop_gradient(approximation_error(approximator, x, hard))
        state.record(error, self.gamma)
        return bridge(hard, approximator_output(approximator, x))

    def observe(self, op, x, hard, state):
        # At inference the layer outputs `hard`; g runs only to report its error (evaluate, validation).
        state.record(ops.stop_gradient(approximation_error(state.approximator, x, hard)), self.gamma)

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


def _copy_layer(layer):
    """A new, unbuilt layer with the configuration of `layer` (Keras serialization)."""
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))


class DABState(EstimatorState):
    r"""A DAB layer's state: its approximator g and the running sums of its error and loss.

    The sums are `RunningSums` (layer variables that are not weights: they do not save or count as
    parameters) and are reported by one metric with three keys, in training and in evaluation:

    - `approximation_error`: the mean over steps of $\frac1B \sum_b \lVert g(x_b) - h(x_b) \rVert^2$;
    - `dab_loss`: the mean over steps of γ times that error (the auxiliary loss that trains g, which
      the logged `loss` does not include);
    - `<layer name>_approximation_error`: the layer's error again, under a per-layer name.

    The first two keys do not depend on layer names; with several DAB layers in one model each layer
    reports them and the last layer's value is logged: read the per-layer keys then.

    Args:
        approximator: The layer's approximator network g.
        gamma: γ, recorded for `describe()`.
        layer_name: Name of the op layer, for the per-layer key.
        **kwargs: Base layer arguments.

    Examples:
        >>> import numpy as np
        >>> import dab_keras
        >>> layer = dab_keras.layers.Sign(estimator="dab", name="code")
        >>> _ = layer(np.array([[-1.0, 0.5]]), training=True)
        >>> sorted(layer.estimator_state.reported_metrics()[0].result())
        ['approximation_error', 'code_approximation_error', 'dab_loss']
        >>> layer.estimator_state.describe()["gamma"]
        10.0
    """

    def __init__(self, approximator, gamma, layer_name, **kwargs):
        super().__init__(**kwargs)
        self.approximator = approximator
        self.gamma = gamma
        self.sums = RunningSums({"error": (), "loss": (), "steps": ()}, name="sums")
        keys = ("approximation_error", "dab_loss", f"{layer_name}_approximation_error")
        self.report(SumsMetric(self.sums, keys, _dab_results, name=f"{layer_name}_dab"))

    def record(self, error, gamma):
        """Adds one step's approximation error (and γ times it) to the sums.

        Args:
            error: Scalar tensor, the batch's mean per-example squared error.
            gamma: γ.
        """
        error = ops.cast(error, "float32")
        self.sums.add({"error": error, "loss": gamma * error, "steps": 1.0})

    def describe(self):
        return {**super().describe(), "gamma": self.gamma}


def _dab_results(sums):
    steps = ops.maximum(sums.read("steps"), 1.0)
    error = sums.read("error") / steps
    return error, sums.read("loss") / steps, error
