"""DAB estimator: a learned approximator network bridges the non-differentiable op."""

import keras
from keras import ops

from dab_keras import _validation
from dab_keras.estimators.base import SURROGATES, Estimator, bridge, default_surrogate
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


def approximation_error(approximator, x, hard, base=None):
    r"""Per-batch mean of the per-example squared error $\sum (g(x) - h(x))^2$, training g only.

    The input is stop-gradient, so the error's gradient reaches g's weights and not `x`.

    Args:
        approximator: A built Keras layer or model: g itself, or the learned correction c of a
            residual approximator $g = s + c$.
        x: The op's input, `(batch, ...)`.
        hard: The hard output $h(x)$, shaped like $g(x)$ (no gradient flows into it).
        base: Optional $s(x)$, shaped like `hard`, added to the network's output (no gradient flows into
            it). Defaults to `None` ($g$ is the network alone).

    Returns:
        A float32 scalar: $\frac1B \sum_b \lVert g(x_b) - h(x_b) \rVert^2$ (the sum runs over all
        non-batch axes; for a rank-1 output, the mean of the squared errors).
    """
    g = ops.cast(approximator(ops.stop_gradient(ops.cast(x, approximator.compute_dtype))), "float32")
    if base is not None:
        g = g + ops.stop_gradient(ops.cast(base, "float32"))
    squared = ops.square(g - ops.stop_gradient(ops.cast(hard, "float32")))
    axes = tuple(range(1, len(squared.shape)))
    return ops.mean(ops.sum(squared, axis=axes) if axes else squared)


@keras.saving.register_keras_serializable(package="dab_keras.estimators", name="DAB")
class DAB(Estimator):
    r"""Differentiable approximation bridge: hard forward, a learned approximator's gradient backward.

    A small network (the approximator) $g$ is trained to imitate the hard op $h$; the layer outputs
    $h(x)$ and back-propagates through $g$:

    $$ y = h(x), \qquad \frac{\partial L}{\partial x} = J_g(x)^\top \frac{\partial L}{\partial y},
    \qquad L_{\text{DAB}} = \gamma \cdot \frac1B \sum_{b=1}^{B} \lVert g(x_b) - h(x_b) \rVert_2^2. $$

    **Residual approximator (default).** With `residual=True`, $g(x) = s(x) + c_\theta(x)$: the
    network $c_\theta$ learns a correction to the op's straight-through surrogate $s$
    (`dab_keras.estimators.default_surrogate`: the identity for `Sign`, `Quantize`, `VectorQuantize`;
    the relaxation at temperature τ for `ArgMax`, `Sort`, `TopK`; `surrogate="relaxation"` takes the
    relaxation for every op, e.g. tanh for a stochastic `Sign`). The default network's output layer
    starts at zero, so at step 0 DAB's gradient is exactly straight-through's and the DAB loss then
    fits $c_\theta$ to $h - s$: the bridge starts from a working gradient instead of a random network's.
    With `residual=False`, $g = c_\theta$ alone, as in the paper (and this library before the
    residual default): its gradient is a random network's until g has been fitted.

    The layer adds $L_{\text{DAB}}$'s gradient with `add_loss` (as $L - \operatorname{sg}(L)$: zero in
    value, so the logged `loss` is the task loss for every estimator); it trains $c_\theta$ only (its
    gradient w.r.t. x is zero, as in the reference code), and the task loss never reaches $c_\theta$'s
    weights. The layer's output never depends on g at inference; g runs there only to report its error.
    The error and the DAB loss are logged as `approximation_error` and `dab_loss` (`DABState`), in
    training and evaluation.

    Each layer gets its own network from `build` (a `DABState`): the layer's default, or a copy of
    `approximator` (config and, when built, weights), so one estimator object can serve many layers.

    Default networks (built by the layer when `approximator=None`): an element-wise tanh MLP for `Sign`
    and `Quantize`, a dense tanh MLP over the op's axis for `ArgMax`, `Sort`, `TopK` and over the code
    dimension for `VectorQuantize` (`dab_keras.layers.approximators`); with `residual=True` their output
    layer is zero-initialised (`zero_output()`), also when such a network is given, unbuilt, as
    `approximator`. Any other network given is used as it is (a built one keeps its weights): with
    `residual=True` it is the correction, so start it near zero (e.g. a zero-initialised last layer) for
    DAB to start as straight-through.

    Args:
        approximator: Optional Keras layer or model mapping the op's input (with the op's axis last) to a
            tensor shaped like its hard output: a template that each layer copies. Defaults to `None`
            (the layer's default network).
        gamma: Weight γ >= 0 of the DAB loss. That loss alone trains the network, so γ scales its
            gradient: with Adam or RMSprop (invariant to a constant scale) it changes only the reported
            loss, with SGD it is the network's learning-rate factor, and `0` leaves it untrained.
            Defaults to `10.0` (the paper's).
        residual: `True` for $g = s + c_\theta$ (see above), `False` for $g = c_\theta$ (the paper's
            formulation). Defaults to `True`.
        temperature: τ > 0 of the relaxation surrogate of a residual approximator for ops without an
            identity surrogate (`ArgMax`, `Sort`, `TopK`), kept in a non-trainable variable that
            `dab_keras.callbacks.TemperatureSchedule` can anneal. Unused with `residual=False`.
            Defaults to `1.0` (as `StraightThrough`).
        surrogate: The base $s$ of a residual approximator, as `StraightThrough`'s: `"auto"` (the
            identity where the op has one, else the relaxation), `"identity"` or `"relaxation"`. For a
            sampled latent (`Sign` on logits plus logistic noise, as in a binary VAE) `"relaxation"`
            starts DAB as the straight-through binary Concrete instead of the identity, whose
            gradient ignores that a sample flips only near zero. `"reinmax"` (for a sample: `ArgMax`
            stochastic or called with `noise=`, `Sign` called with `noise=`) starts DAB as ReinMax: the
            bridge's gradient is ReinMax's plus the correction's, and $c_\theta$ is fitted to $h$ minus
            the relaxation. Only with `residual=True`. Defaults to `"auto"`.

    Raises:
        ValueError: if `approximator` is neither `None` nor a Keras layer, `gamma` is not a finite
            number >= 0, `residual` is not a bool, `temperature` is not a finite number > 0, or
            `surrogate` is not one of the four names (or not `"auto"` with `residual=False`).

    Examples:
        >>> import numpy as np
        >>> import dab_keras
        >>> layer = dab_keras.layers.Sign(margin=0.5, estimator=DAB(gamma=10.0))
        >>> np.asarray(layer(np.array([[-1.0, 0.2, 0.7]]), training=True)).tolist()
        [[-1.0, 0.0, 1.0]]
        >>> len(layer.losses)  # the DAB loss's gradient (zero in value), added in training
        1
        >>> np.asarray(layer.approximator(np.array([[0.3, -2.0]]))).tolist()  # the correction starts at 0
        [[0.0, 0.0]]
        >>> paper = DAB(residual=False)  # g is the network alone, randomly initialised

    References:
        Ramapuram & Webb, "Improving Discrete Latent Representations With Differentiable Approximation
        Bridges", 2019, arXiv:1905.03658.
    """

    name = "dab"

    def __init__(self, approximator=None, gamma=10.0, residual=True, temperature=1.0, surrogate="auto"):
        if approximator is not None and not isinstance(approximator, keras.layers.Layer):
            raise ValueError(
                "`approximator` must be a Keras layer or model (or None for the default). "
                f"Received: approximator={approximator!r}"
            )
        if not isinstance(residual, bool):
            raise ValueError(f"`residual` must be True or False. Received: residual={residual!r}")
        surrogate = _validation.check_one_of("surrogate", surrogate, SURROGATES)
        if not residual and surrogate != "auto":
            raise ValueError(
                "`surrogate` chooses the base of a residual approximator: it needs residual=True. "
                f"Received: surrogate={surrogate!r}, residual=False"
            )
        self.approximator = approximator
        self.surrogate = surrogate
        self.gamma = _validation.check_non_negative_float("gamma", gamma)
        self.residual = residual
        self.initial_temperature = _validation.check_positive_float("temperature", temperature)
        # The layer keeps τ (annealable) only where it is used: the residual approximator's surrogate.
        self.temperature = self.initial_temperature if residual else None

    @property
    def state_tag(self):
        """`"ResidualDAB"` or `"DAB"`: a residual network is a correction, the paper's is g itself.

        Their weights do not transfer, so each loads only its own kind (the other starts fresh, with a
        warning); files saved before the residual default hold `"DAB"` state. A residual approximator
        whose base is not `"auto"` is tagged with it (`"ResidualDAB-relaxation"`): a correction to one
        base is not a correction to another.

        Returns:
            A string.
        """
        if not self.residual:
            return "DAB"
        return "ResidualDAB" if self.surrogate == "auto" else f"ResidualDAB-{self.surrogate}"

    def build(self, layer, op_shape):
        """Creates `layer`'s approximator and running sums (see `DABState`).

        The network is the layer's default (`layer.default_approximator(op_shape)`, with its output
        zeroed when residual) or a copy of the `approximator` given to this estimator (rebuilt from its
        config, with its weights when it is built): the estimator keeps a template, each layer owns its
        own network.

        Args:
            layer: The op layer.
            op_shape: The op input's shape, op axis last.

        Returns:
            A `DABState`.
        """
        default = self.approximator is None
        approximator = layer.default_approximator(op_shape) if default else _copy_layer(self.approximator)
        state = DABState(
            approximator,
            self.gamma,
            layer.name,
            residual=self.residual,
            temperature=self.temperature,
            dtype=layer.dtype_policy,
            name="estimator_state",
        )
        fresh = not approximator.built and (default or not self.approximator.built)
        if not approximator.built:
            approximator.build(op_shape)
        if fresh and self.residual and hasattr(approximator, "zero_output"):
            approximator.zero_output()  # the library's MLPs: the correction starts at zero
        if not default and self.approximator.built:
            for target, source in zip(approximator.weights, self.approximator.weights):
                target.assign(ops.convert_to_numpy(source))  # a copy: JAX may donate buffers
        return state

    def _base(self, op, x, state, in_sample=True):
        """$s(x)$ for a residual approximator, else `None`.

        With `surrogate="reinmax"` and `in_sample=False` (inference, diagnostics), a call that draws no
        sample takes the relaxation: the same value, without ReinMax's gradient (which needs the sample).
        """
        if not self.residual:
            return None
        surrogate = self.surrogate
        if surrogate == "reinmax" and not in_sample and getattr(op, "sampled_logits", None) is None:
            surrogate = "relaxation"
        return default_surrogate(op, x, state.temperature, surrogate)

    def approximate(self, op, x, state):
        r"""The bridge's $g(x)$: what the layer's backward differentiates, $J_g(x)^\top u$.

        $s(x) + c_\theta(x)$ for a residual approximator, $c_\theta(x)$ for the paper's, with the network's
        weights held constant (`approximator_output`): differentiable in `x` only. For diagnostics (how
        far g is from the hard op, what its Jacobian does to a gradient); training does not call it.
        With `surrogate="reinmax"` outside a sampling call, $s$ is the relaxation (the same value).

        Args:
            op: The layer that owns the op (built, with this estimator).
            x: The op's input, op axis last (after the layer's `op_inputs` and `perturb`).
            state: The layer's `DABState` (`op.estimator_state`).

        Returns:
            A float32 tensor shaped like the op's hard output.

        Examples:
            >>> import numpy as np
            >>> import dab_keras
            >>> layer = dab_keras.layers.Sign(estimator="dab")
            >>> _ = layer(np.zeros((1, 2), "float32"))  # builds the layer and its approximator
            >>> x = keras.ops.convert_to_tensor([[0.3, -2.0]])
            >>> np.asarray(layer.estimator.approximate(layer, x, layer.estimator_state)).round(3).tolist()
            [[0.3, -2.0]]
        """
        return self._bridge_input(state.approximator, x, self._base(op, x, state, in_sample=False))

    @staticmethod
    def _bridge_input(approximator, x, base):
        g = approximator_output(approximator, x)
        return g if base is None else ops.cast(base, "float32") + g

    def __call__(self, op, x, hard, state):
        base = self._base(op, x, state)
        state.record(self._fit(op, x, hard, state, base), self.gamma)
        return bridge(hard, self._bridge_input(state.approximator, x, base))

    def _fit(self, op, x, target, state, base):
        """Adds the DAB loss that fits g (`base` plus the network) to `target`; returns g's error."""
        approximator = state.approximator
        if not approximator.trainable:
            # A frozen approximator (e.g. a frozen pretrained layer) keeps bridging gradients but is
            # not fitted any more: it adds no loss (its error is still reported).
            return ops.stop_gradient(approximation_error(approximator, x, target, base))
        error = approximation_error(approximator, x, target, base)
        loss = self.gamma * error
        # Zero in value, the DAB loss's gradient: the logged `loss` stays the task loss, g trains.
        op.add_loss(loss - ops.stop_gradient(loss))
        return error

    def observe(self, op, x, hard, state):
        # At inference the layer outputs `hard`; g runs only to report its error (evaluate, validation).
        error = approximation_error(state.approximator, x, hard, self._base(op, x, state, in_sample=False))
        state.record(ops.stop_gradient(error), self.gamma)

    def __repr__(self):
        approximator = None if self.approximator is None else f"<{self.approximator.name}>"
        return (
            f"DAB(approximator={approximator}, gamma={self.gamma!r}, residual={self.residual!r}, "
            f"temperature={self.initial_temperature!r}, surrogate={self.surrogate!r})"
        )

    def get_config(self):
        approximator = self.approximator
        if approximator is not None:
            approximator = keras.saving.serialize_keras_object(approximator)
        return {
            "approximator": approximator,
            "gamma": self.gamma,
            "residual": self.residual,
            "temperature": self.initial_temperature,
            "surrogate": self.surrogate,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("approximator") is not None:
            config["approximator"] = keras.saving.deserialize_keras_object(config["approximator"])
        # Configs saved before the residual default described the paper's (non-residual) DAB.
        config.setdefault("residual", False)
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
        residual: Whether g is the op's surrogate plus the network (recorded for `describe()`).
            Defaults to `False`.
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

    def __init__(self, approximator, gamma, layer_name, residual=False, **kwargs):
        super().__init__(**kwargs)
        self.approximator = approximator
        self.gamma = gamma
        self.residual = residual
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
        return {**super().describe(), "gamma": self.gamma, "residual": self.residual}


def _dab_results(sums):
    steps = ops.maximum(sums.read("steps"), 1.0)
    error = sums.read("error") / steps
    return error, sums.read("loss") / steps, error
