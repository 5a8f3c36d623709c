"""The temperature check shared by every relaxation in `dab_keras.ops`."""

import numbers

import numpy as np
from keras import ops


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
        ValueError: for a number that is not finite and > 0, or for a bool.
    """
    if isinstance(value, bool) or (isinstance(value, np.ndarray) and value.dtype == bool):
        raise ValueError(f"`temperature` must be a finite number > 0. Received: temperature={value!r}")
    if isinstance(value, (numbers.Real, np.ndarray)):
        array = np.asarray(value, dtype=np.float64)
        if array.size != 1 or not np.isfinite(array).all() or not (array > 0).all():
            raise ValueError(f"`temperature` must be a finite number > 0. Received: temperature={value!r}")
        return ops.convert_to_tensor(float(array.reshape(())), dtype=dtype)
    tau = ops.cast(value, dtype)
    valid = ops.logical_and(tau > 0, ops.isfinite(tau))
    return ops.where(valid, tau, ops.full_like(tau, float("nan")))
