"""The hard `Sign` code of the sorter and the classifier: its DAB estimator, and cutting a model at it.

Both families put a `dab_keras.layers.Sign` code in the middle of a network: `code_estimator` gives it
the zoo's dense DAB approximator, and `copy_layer_weights` builds the `include_top=False` model (ending
at the code) from the full model with loaded weights.
"""

from dab_keras import estimators as dab_estimators
from dab_keras import layers as dab_layers
from dab_keras.zoo import weights as zoo_weights


def code_estimator(estimator, width, approximator_units, residual=False):
    """The estimator of a `Sign` code of `width` units: `"dab"` by name gets a dense approximator.

    The approximator is a tanh MLP over the whole code (`AxisMLP`, the DAB reference's "batch"
    approximator), much cheaper per example than the default element-wise MLP run on each unit. Other
    names and estimator objects pass through.

    Args:
        estimator: Estimator name or `Estimator` instance.
        width: Width of the code (the `Sign` layer's input).
        approximator_units: Hidden widths of the approximator.
        residual: The DAB's `residual` (`True`: the approximator corrects the identity surrogate and
            starts at zero; `False`: the paper's g alone). Defaults to `False`.

    Returns:
        A `dab_keras.estimators.DAB` with an `AxisMLP((width,), units=approximator_units)` approximator
        named `"approximator"` for `"dab"`, else `estimator` unchanged.

    Raises:
        ValueError: for an unknown estimator name.

    Examples:
        >>> code_estimator("dab", 256, (128,))
        DAB(approximator=<approximator>, gamma=10.0, residual=False, temperature=1.0, surrogate='auto')
        >>> code_estimator("relaxed", 256, (128,))
        'relaxed'
    """
    if isinstance(estimator, str) and zoo_weights.estimator_key(estimator) == "dab":
        return dab_estimators.DAB(
            approximator=dab_layers.AxisMLP((width,), units=approximator_units, name="approximator"),
            residual=residual,
        )
    return estimator


def copy_layer_weights(target, source):
    """Copies the weights of each layer of `target` from the layer of `source` with the same name.

    Used to cut a model with loaded weights at its code (`include_top=False`).

    Args:
        target: A built Keras model.
        source: A built Keras model holding a layer of the same name and weight shapes for every layer
            of `target` that has weights.

    Returns:
        `target`, its weights overwritten.

    Raises:
        ValueError: if `source` has no layer of a needed name, or the weights' shapes differ.

    Examples:
        >>> import keras
        >>> import numpy as np
        >>> source = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="a"),
        ...                            keras.layers.Dense(1, name="b")])
        >>> target = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="a")])
        >>> target = copy_layer_weights(target, source)
        >>> kernel = source.get_layer("a").get_weights()[0]
        >>> bool(np.array_equal(target.get_layer("a").get_weights()[0], kernel))
        True
    """
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
    return target
