"""Argument checks shared by ops, estimators and layers.

Every check raises with the rule, the allowed values and `Received: name=value`, the way Keras's own
argument validation does.
"""

import math
import numbers


def check_positive_float(name, value):
    """Returns `value` as a float after checking that it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a number > 0. Received: {name}={value!r}")
    value = float(value)
    if not value > 0.0 or value == float("inf"):
        raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value!r}")
    return value


def check_non_negative_float(name, value):
    """Returns `value` as a float after checking that it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a number >= 0. Received: {name}={value!r}")
    value = float(value)
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value!r}")
    return value


def check_int(name, value, minimum):
    """Returns `value` after checking that it is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def check_one_of(name, value, allowed):
    """Returns `value` after checking that it is one of `allowed`."""
    if value not in allowed:
        raise ValueError(
            f"`{name}` must be one of {', '.join(repr(a) for a in allowed)}. Received: {name}={value!r}"
        )
    return value


def check_range(min_value, max_value):
    """Returns `(min_value, max_value)` as floats after checking they are finite and `min_value < max_value`."""
    for name, value in (("min_value", min_value), ("max_value", max_value)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"`{name}` must be a number. Received: {name}={value!r}")
    for name, value in (("min_value", min_value), ("max_value", max_value)):
        if not math.isfinite(float(value)):
            raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
    if not float(min_value) < float(max_value):
        raise ValueError(
            "`min_value` must be smaller than `max_value`. "
            f"Received: min_value={min_value!r}, max_value={max_value!r}"
        )
    if not math.isfinite(float(max_value) - float(min_value)):
        raise ValueError(
            "`max_value - min_value` must be a finite number. "
            f"Received: min_value={min_value!r}, max_value={max_value!r}"
        )
    return float(min_value), float(max_value)


def check_axis(axis):
    """Returns `axis` after checking that it is an integer (its range is checked against the input)."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(f"`axis` must be an integer. Received: axis={axis!r}")
    return int(axis)


def canonical_axis(axis, rank, what="axis"):
    """Returns `axis` as a non-negative index for a tensor of `rank`, rejecting the batch axis 0."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(f"`{what}` must be an integer. Received: {what}={axis!r}")
    if not -rank <= axis < rank:
        raise ValueError(
            f"`{what}` must be in [-{rank}, {rank}) for inputs of rank {rank}. Received: {what}={axis}"
        )
    axis = int(axis) % rank
    if axis == 0:
        raise ValueError(
            f"`{what}` must not be the batch axis 0: the op works along a feature axis. Received: {what}={axis}"
        )
    return axis
