"""What a model needs at inference: an estimator-aware `summary` and `export_inference`.

Every hard layer's estimator state (temperature, DAB approximator, running sums) serves training only: at
inference the layer outputs the hard op whatever the estimator. `summary` separates those parameters from
the ones inference uses; `export_inference` returns a copy of the model without them.
"""

import keras
from keras import ops

from dab_keras import estimators as estimators_lib
from dab_keras.layers.base import DiscreteLayer


def hard_layers(model):
    """The `dab_keras` op layers of `model`, in Keras's layer order (nested models included).

    Args:
        model: A Keras model or layer.

    Returns:
        A list of `dab_keras.layers.DiscreteLayer`.

    Examples:
        >>> import dab_keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), dab_keras.layers.Sign()])
        >>> [type(layer).__name__ for layer in hard_layers(model)]
        ['Sign']
    """
    return [layer for layer in model._flatten_layers(include_self=True) if isinstance(layer, DiscreteLayer)]


def _count(weights):
    return int(sum(int(ops.size(w)) for w in weights))


def training_only_weights(model):
    """The weights only training uses: every hard layer's estimator state (approximators, temperatures).

    Args:
        model: A built Keras model.

    Returns:
        A list of variables (a sublist of `model.weights`).

    Examples:
        >>> import numpy as np
        >>> import dab_keras
        >>> model = keras.Sequential([keras.Input((4,)), dab_keras.layers.Sign(estimator="relaxed")])
        >>> [w.name for w in training_only_weights(model)]
        ['temperature']
    """
    weights = []
    for layer in hard_layers(model):
        if layer.estimator_state is not None:
            weights.extend(layer.estimator_state.weights)
    return weights


def summary(model, print_fn=None):
    """Prints, per hard layer, its estimator and state, then the inference and training-only parameters.

    Columns: layer, op class, estimator, τ (the state's temperature, as annealed), γ (DAB's loss weight),
    the approximator (class and parameters). Parameter counts: `model.count_params()` split into those
    inference uses and those only training uses (the estimator states, which `export_inference` drops).

    Args:
        model: A built Keras model.
        print_fn: Function called with the text. Defaults to `None` (`print`).

    Returns:
        A dict: `layers` (one dict per hard layer: `name`, `op`, `estimator`, `temperature`, `gamma`,
        `approximator`, `approximator_params`), `total_params`, `inference_params`,
        `training_only_params`.

    Examples:
        >>> import dab_keras
        >>> model = keras.Sequential([
        ...     keras.Input((8,)), keras.layers.Dense(4),
        ...     dab_keras.layers.Sign(estimator="dab", name="code"),
        ...     keras.layers.Dense(1)])
        >>> info = summary(model)
        layer  op    estimator  τ  γ   approximator
        code   Sign  DAB        1  10  ElementwiseMLP (97 params)
        Total params: 139 (inference 41, training only 98)
        >>> info["inference_params"], info["training_only_params"]
        (41, 98)
    """
    rows = []
    for layer in hard_layers(model):
        state = layer.estimator_state
        described = {} if state is None else state.describe()
        rows.append({
            "name": layer.name,
            "op": type(layer).__name__,
            "estimator": type(layer.estimator).__name__,
            "temperature": described.get("temperature"),
            "gamma": described.get("gamma"),
            "approximator": described.get("approximator"),
            "approximator_params": described.get("approximator_params", 0),
        })
    total = model.count_params()
    training_only = _count(training_only_weights(model))
    table = [("layer", "op", "estimator", "τ", "γ", "approximator")]
    for row in rows:
        approximator = "-" if row["approximator"] is None else f"{row['approximator']} ({row['approximator_params']} params)"
        table.append((
            row["name"],
            row["op"],
            row["estimator"],
            "-" if row["temperature"] is None else f"{row['temperature']:.4g}",
            "-" if row["gamma"] is None else f"{row['gamma']:g}",
            approximator,
        ))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.append(f"Total params: {total} (inference {total - training_only}, training only {training_only})")
    (print_fn or print)("\n".join(lines))
    return {
        "layers": rows,
        "total_params": total,
        "inference_params": total - training_only,
        "training_only_params": training_only,
    }


def export_inference(model):
    """A copy of `model` for inference: every hard layer without estimator state, same outputs.

    Each `dab_keras` op layer is rebuilt with `dab_keras.estimators.InferenceOnly` (no temperature, no
    approximator, no running sums) and every weight inference uses is copied. The copy computes what
    `model(x, training=False)` computes, saves to `.keras` (reloading with `safe_mode=True`), and on
    TensorFlow exports with `model.export(path)`. It does not train (its hard layers pass no gradient).

    Args:
        model: A built functional or `Sequential` Keras model (`keras.models.clone_model` rebuilds it).

    Returns:
        A new Keras model.

    Raises:
        ValueError: for a subclassed model, which `clone_model` cannot rebuild.

    Examples:
        >>> import numpy as np
        >>> import dab_keras
        >>> model = keras.Sequential([
        ...     keras.Input((8,)), keras.layers.Dense(4),
        ...     dab_keras.layers.Sign(estimator="dab"), keras.layers.Dense(1)])
        >>> light = export_inference(model)
        >>> light.count_params(), model.count_params()
        (41, 139)
        >>> x = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
        >>> bool(np.array_equal(light.predict(x, verbose=0), model.predict(x, verbose=0)))
        True
    """
    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, DiscreteLayer):
            config["estimator"] = estimators_lib.serialize(estimators_lib.InferenceOnly())
        return type(layer).from_config(config)

    try:
        exported = keras.models.clone_model(model, clone_function=clone, recursive=True)
    except ValueError as error:
        raise ValueError(
            "export_inference rebuilds the model with keras.models.clone_model, which needs a functional or "
            f"Sequential model. Received: model of type {type(model).__name__} ({error})"
        ) from error
    skip = {id(w) for w in training_only_weights(model)}
    source = [w for w in model.weights if id(w) not in skip]
    target = exported.weights
    if len(source) != len(target):
        raise ValueError(
            f"export_inference could not match the weights of {model.name}: {len(source)} inference weights, "
            f"{len(target)} in the copy."
        )
    for s, t in zip(source, target):
        t.assign(ops.convert_to_numpy(s))  # a copy: JAX may donate the source buffers
    return exported
