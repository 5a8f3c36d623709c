"""Gradient estimators, chosen per layer with one `estimator=` argument.

- `StraightThrough` (`"straight_through"`, `"ste"`): hard forward, surrogate backward.
- `Relaxed` (`"relaxed"`): continuous relaxation at temperature τ in training (`hard=True`: hard forward,
  relaxed gradient).
- `DAB` (`"dab"`): hard forward, backward through a learned approximator network.

`get` turns a name, a config dict or an instance into an estimator; `serialize`/`deserialize` go the other
way, as `keras.quantizers` does.
"""

import keras

from dab_keras.estimators.base import Bridgeable, Estimator, bridge
from dab_keras.estimators.dab import DAB
from dab_keras.estimators.relaxed import Relaxed
from dab_keras.estimators.straight_through import StraightThrough

ALIASES = {
    "straight_through": StraightThrough,
    "ste": StraightThrough,
    "relaxed": Relaxed,
    "dab": DAB,
}


def serialize(estimator):
    """Returns the Keras config dict of `estimator`."""
    return keras.saving.serialize_keras_object(estimator)


def deserialize(config):
    """Builds an estimator from a config made by `serialize`."""
    return keras.saving.deserialize_keras_object(config)


def get(identifier):
    """Returns an estimator from a name, a config dict or an instance.

    Args:
        identifier: One of `"straight_through"` (alias `"ste"`), `"relaxed"`, `"dab"`, a config dict from
            `serialize`, or an `Estimator` instance (returned as is).

    Returns:
        An `Estimator`.

    Raises:
        ValueError: for an unknown name or another kind of object.

    Example:
    >>> get("dab")
    DAB(approximator=None, gamma=10.0)
    """
    if isinstance(identifier, Estimator):
        return identifier
    if isinstance(identifier, dict):
        estimator = deserialize(identifier)
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
    "Estimator",
    "Relaxed",
    "StraightThrough",
    "deserialize",
    "get",
    "bridge",
    "serialize",
]
