"""`Bridge`: bridge any hard function you pass with a learned approximator (formerly the layer `DAB`)."""

import re

import keras

from dab_keras import _validation
from dab_keras import estimators as estimators_lib
from dab_keras.layers.approximators import AxisMLP
from dab_keras.layers.base import DiscreteLayer


@keras.saving.register_keras_serializable(package="dab_keras", name="Bridge")
class Bridge(DiscreteLayer):
    r"""Makes any hard (non-differentiable) function trainable with a differentiable approximation bridge.

    $$ y = h(x), \qquad \frac{\partial L}{\partial x} = J_g(x)^\top \frac{\partial L}{\partial y},
    \qquad L_{\text{DAB}} = \gamma \cdot \frac1B \sum_b \lVert g(x_b) - h(x_b) \rVert^2, $$

    as `dab_keras.estimators.DAB(residual=False)` describes (a function given by its hard forward alone has
    no surrogate for a residual approximator to correct). `hard_fn` must be written with `keras.ops` (so it runs on
    every backend and under XLA) and map a float32 tensor `(batch, ..., n)` to a tensor `(batch, ..., m)`
    or any shape the approximator matches. The default approximator is a dense tanh MLP over the last axis
    (`AxisMLP`), which needs the output to keep the input's leading axes.

    This layer was called `DAB` before, the name of the estimator it uses (`dab_keras.estimators.DAB`);
    `dab_keras.layers.DAB` remains an alias, and `.keras` files that name it `dab_keras>DAB` load.

    To save and reload the layer with `keras.models.load_model(..., safe_mode=True)`, register `hard_fn`
    with `@keras.saving.register_keras_serializable()`; lambdas only reload with `safe_mode=False`.

    Args:
        hard_fn: Callable `x -> h(x)`, written with `keras.ops`.
        approximator: Optional Keras layer/model mapping x to a tensor shaped like `hard_fn(x)`.
            Defaults to `None` (an `AxisMLP`).
        gamma: Weight γ >= 0 of the DAB loss, which alone trains the approximator (see
            `dab_keras.estimators.DAB`). Defaults to `10.0`.
        **kwargs: Base layer arguments (not `estimator`: this layer always uses DAB; only exported
            inference models give it `dab_keras.estimators.InferenceOnly`).

    Raises:
        ValueError: if `kwargs` holds `estimator`, `hard_fn` is not callable, or `gamma` is not a finite
            number >= 0; when built with the default approximator, if the input's last axis or
            `hard_fn`'s has an unknown size, or `hard_fn` changes the leading axes.

    Examples:
        >>> import keras, numpy as np
        >>> @keras.saving.register_keras_serializable(package="docs")
        ... def parity(x):
        ...     return keras.ops.mod(keras.ops.floor(x), 2.0)
        >>> layer = Bridge(parity)
        >>> np.asarray(layer(np.array([[0.5, 1.5, 2.5]]))).tolist()
        [[0.0, 1.0, 0.0]]

    References:
        Ramapuram & Webb, "Improving Discrete Latent Representations With Differentiable Approximation
        Bridges", 2019, arXiv:1905.03658.
    """

    def __init__(self, hard_fn, approximator=None, gamma=10.0, **kwargs):
        given = kwargs.pop("estimator", None)
        inference_only = None
        if given is not None:
            # Accepted only as the estimator of exported inference models (`dab_keras.export_inference`).
            try:
                inference_only = estimators_lib.get(given)
            except ValueError:
                pass
            if not getattr(inference_only, "inference_only", False):
                raise ValueError(
                    "The Bridge layer always uses the DAB estimator; set `approximator` and `gamma` instead, "
                    f"or use another layer for other estimators. Received: estimator={given!r}"
                )
        if isinstance(hard_fn, (str, dict)):
            hard_fn = keras.saving.deserialize_keras_object(hard_fn)
        if not callable(hard_fn):
            raise ValueError(f"`hard_fn` must be a callable. Received: hard_fn={hard_fn!r}")
        if isinstance(approximator, dict):
            approximator = keras.saving.deserialize_keras_object(approximator)
        gamma = _validation.check_non_negative_float("gamma", gamma)
        # A function given only by its hard forward has no surrogate to correct: g is the network alone.
        dab = estimators_lib.DAB(approximator=approximator, gamma=gamma, residual=False)
        super().__init__(estimator=inference_only or dab, **kwargs)
        self.hard_fn = hard_fn
        self.gamma = gamma
        self._approximator_config = dab.get_config()["approximator"]

    def hard(self, x):
        return self.hard_fn(x)

    def load_own_variables(self, store):
        """Loads the layer's weights, also from files written when the class was named `DAB`.

        Keras names a layer's entry in a weight file after its class (`layers/dab`, `layers/dab_1`, ...),
        so an empty entry under this class's name is looked up under the former one.

        Args:
            store: Keras's weights store for this layer.
        """
        path = getattr(store, "_h5_entry_path", None)
        if path and not list(store.keys()):
            former = re.sub(r"(^|/)bridge(_\d+)?$", r"\1dab\2", path)
            if former != path and former in store.h5_file:
                store = store.get(former)
        super().load_own_variables(store)

    def default_approximator(self, shape):
        if shape[-1] is None:
            raise ValueError(
                "The default approximator is a dense network over the last axis, so that axis must have a "
                f"known size; give the Input a full shape or pass `approximator=`. Received: input shape {shape}"
            )
        out_shape = self.compute_output_shape(shape)
        if out_shape[-1] is None:
            raise ValueError(
                "The default approximator needs `hard_fn`'s output to have a known last-axis size; pass "
                f"`approximator=` for this function. Received: input shape {shape}, hard_fn output shape "
                f"{out_shape}"
            )
        if len(out_shape) != len(shape) or tuple(out_shape[:-1])[1:] != tuple(shape[:-1])[1:]:
            raise ValueError(
                "The default approximator maps the last axis only, so `hard_fn` must keep the leading "
                f"axes; pass `approximator=` for this function. Received: input shape {shape}, "
                f"hard_fn output shape {out_shape}"
            )
        return AxisMLP((out_shape[-1],), dtype=self.dtype_policy, name="approximator")

    def compute_output_shape(self, input_shape):
        return tuple(self.hard_fn(keras.KerasTensor(tuple(input_shape), dtype="float32")).shape)

    def get_config(self):
        config = super().get_config()
        if not self.estimator.inference_only:
            config.pop("estimator")
        return {
            **config,
            "hard_fn": keras.saving.serialize_keras_object(self.hard_fn),
            "approximator": self._approximator_config,
            "gamma": self.gamma,
        }


# Files saved when this layer was registered as `DAB` name it `dab_keras>DAB`.
keras.saving.get_custom_objects()["dab_keras>DAB"] = Bridge
