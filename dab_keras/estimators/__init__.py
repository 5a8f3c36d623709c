"""Gradient estimators, chosen per layer with one `estimator=` argument.

- `StraightThrough` (`"straight_through"`, `"ste"`): hard forward, surrogate backward.
- `Relaxed` (`"relaxed"`): continuous relaxation at temperature τ in training (`hard=True`: hard forward,
  relaxed gradient).
- `DAB` (`"dab"`): hard forward, backward through a learned approximator network.

Each estimator creates the state it needs for each layer that uses it (`Estimator.build` returns an
`EstimatorState`: temperature, approximator, running sums), which the layer tracks as
`layer.estimator_state`.

`get` turns a name, a config dict or an instance into an estimator; `serialize`/`deserialize` go the other
way, as `keras.quantizers` does.
"""

import keras

from dab_keras.estimators.base import (
    Bridgeable,
    Estimator,
    InferenceOnly,
    bridge,
    default_surrogate,
    reinmax_surrogate,
)
from dab_keras.estimators.dab import DAB, DABState
from dab_keras.estimators.relaxed import Relaxed
from dab_keras.estimators.state import EstimatorState, RunningSums, SumsMetric
from dab_keras.estimators.straight_through import StraightThrough

ALIASES = {
    "straight_through": StraightThrough,
    "ste": StraightThrough,
    "relaxed": Relaxed,
    "dab": DAB,
}


def serialize(estimator):
    """Returns the Keras config dict of `estimator` (`keras.saving.serialize_keras_object`).

    Args:
        estimator: An `Estimator` registered with `keras.saving.register_keras_serializable` (the
            built-in ones are).

    Returns:
        A JSON-serializable dict with `class_name`, `module`, `registered_name` and `config` (the
        estimator's `get_config()`).

    Examples:
        >>> serialize(StraightThrough())["config"]
        {'clip_value': None, 'surrogate': 'auto', 'temperature': 1.0}
    """
    return keras.saving.serialize_keras_object(estimator)


def deserialize(config):
    """Builds an estimator from a config made by `serialize` (`keras.saving.deserialize_keras_object`).

    Args:
        config: A dict returned by `serialize`.

    Returns:
        A new estimator equal in configuration to the serialized one.

    Examples:
        >>> deserialize(serialize(Relaxed(temperature=0.5)))
        Relaxed(temperature=0.5, hard=False)
    """
    return keras.saving.deserialize_keras_object(config)


def get(identifier):
    """Returns an estimator from a name, a config dict or an instance.

    Args:
        identifier: One of `"straight_through"` (alias `"ste"`), `"relaxed"`, `"dab"`, a config dict from
            `serialize`, or an `Estimator` instance (returned as is).

    Returns:
        An `Estimator`.

    Raises:
        ValueError: for an unknown name, a config dict of something other than an estimator, or another
            kind of object.

    Examples:
        >>> get("dab")
        DAB(approximator=None, gamma=10.0, residual=True, temperature=1.0, surrogate='auto')
        >>> get("ste")
        StraightThrough(clip_value=None, surrogate='auto', temperature=1.0)
        >>> get(Relaxed(temperature=0.5, hard=True))
        Relaxed(temperature=0.5, hard=True)
    """
    if isinstance(identifier, Estimator):
        return identifier
    if isinstance(identifier, dict):
        try:
            estimator = deserialize(identifier)
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(
                "`estimator` given as a dict must be a config made by dab_keras.estimators.serialize "
                f"({error}). Received: estimator={identifier!r}"
            ) from error
        if isinstance(estimator, Estimator):
            return estimator
    if isinstance(identifier, str) and identifier in ALIASES:
        return ALIASES[identifier]()
    raise ValueError(
        f"`estimator` must be one of {', '.join(repr(a) for a in ALIASES)} or a "
        f"dab_keras.estimators.Estimator instance. Received: estimator={identifier!r}"
    )


__all__ = [
    "ALIASES",
    "DAB",
    "Bridgeable",
    "DABState",
    "Estimator",
    "EstimatorState",
    "InferenceOnly",
    "RunningSums",
    "SumsMetric",
    "Relaxed",
    "StraightThrough",
    "deserialize",
    "get",
    "bridge",
    "default_surrogate",
    "reinmax_surrogate",
    "serialize",
]
