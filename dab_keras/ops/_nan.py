"""NaN policy shared by the ops that work along an axis: a slice holding a NaN gives a flagged slice."""

from keras import ops


def flag_nan_slices(x, out, axis=-1, fill=float("nan")):
    """Returns `out` with every slice along `axis` set to `fill` where that slice of `x` holds a NaN.

    `out` must have `x`'s shape (or broadcast against `any(isnan(x), axis, keepdims=True)`).
    """
    bad = ops.any(ops.isnan(x), axis=axis, keepdims=True)
    return ops.where(bad, ops.full_like(out, fill), out)
