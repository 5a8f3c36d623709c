"""The temperature check shared by every relaxation in `dab_keras.ops`."""

import numbers

import keras
import numpy as np
from keras import ops

# The smallest positive (subnormal) and the largest finite value of each float dtype: a τ outside
# becomes 0 or inf when cast.
_LIMITS = {
    "float16": (6.0e-8, 65504.0),
    "bfloat16": (9.2e-41, 3.38e38),
    "float32": (1.4e-45, 3.4028234e38),
    "float64": (5.0e-324, 1.7976931348623157e308),
}


def largest_finite(dtype):
    """The largest finite value of a float dtype (any name Keras accepts, bfloat16 included)."""
    return _LIMITS.get(keras.backend.standardize_dtype(dtype), (0.0, 3.4028234e38))[1]


def temperature(value, dtype):
    """Returns the temperature τ as a scalar tensor of `dtype`, refusing τ <= 0 and non-finite τ.

    A Python or NumPy number (or a NumPy array of one element) is checked here, eagerly: τ <= 0,
    NaN or ±inf raise a `ValueError` naming `temperature`. A tensor or variable is not read back to the
    host (it may be traced under `jit`): a τ <= 0 or non-finite becomes NaN, so the relaxation returns
    NaN rather than a silently inverted or collapsed result. Keeping a tensor τ valid is the caller's
    responsibility (the layers' temperature variables are checked when set).

    Args:
        value: τ, a number, a NumPy scalar or a scalar tensor/variable.
        dtype: The dtype of the result.

    Returns:
        A scalar tensor of `dtype`.

    Raises:
        ValueError: for a number that is not finite and > 0 (also once cast to `dtype`), or a bool.
    """
    if isinstance(value, bool) or (isinstance(value, np.ndarray) and value.dtype == bool):
        raise ValueError(f"`temperature` must be a finite number > 0. Received: temperature={value!r}")
    if isinstance(value, (numbers.Real, np.ndarray)):
        array = np.asarray(value, dtype=np.float64)
        if array.size != 1 or not np.isfinite(array).all() or not (array > 0).all():
            raise ValueError(f"`temperature` must be a finite number > 0. Received: temperature={value!r}")
        name = keras.backend.standardize_dtype(dtype)
        smallest, largest = _LIMITS.get(name, (0.0, float("inf")))
        if not smallest <= float(array.reshape(())) <= largest:
            raise ValueError(
                f"`temperature` must be a finite number > 0 in {name} (between {smallest:g} and {largest:g}). "
                f"Received: temperature={value!r}"
            )
        return ops.convert_to_tensor(float(array.reshape(())), dtype=dtype)
    tau = ops.cast(value, dtype)
    valid = ops.logical_and(tau > 0, ops.isfinite(tau))
    return ops.where(valid, tau, ops.full_like(tau, float("nan")))
