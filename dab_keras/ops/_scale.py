"""A scale to divide by that keeps huge and tiny inputs finite on every backend."""

from keras import ops

# 2^±126: both the scale and its reciprocal are normal float32 numbers. XLA on CPU divides by
# multiplying with the reciprocal and flushes subnormals to zero, so x / 3e38 would be 0 there.
_MAX_EXPONENT = 126.0


def power_of_two_scale(magnitude):
    """The power of two at or below `magnitude`, clipped to [2^-126, 2^126]; no gradient.

    Dividing by it is exact (a change of exponent) and leaves values of at most `magnitude` below 4 in
    absolute value; 0 maps to 2^-126, NaN to NaN.

    Args:
        magnitude: Non-negative floating-point tensor, e.g. a slice's largest absolute value.

    Returns:
        A tensor of `magnitude`'s shape and dtype.
    """
    magnitude = ops.stop_gradient(magnitude)
    safe = ops.where(magnitude > 0, magnitude, ops.ones_like(magnitude))
    exponent = ops.clip(ops.floor(ops.log2(safe)), -_MAX_EXPONENT, _MAX_EXPONENT)
    exponent = ops.where(magnitude > 0, exponent, -_MAX_EXPONENT * ops.ones_like(exponent))
    return ops.stop_gradient(ops.power(ops.cast(2.0, magnitude.dtype), exponent))
