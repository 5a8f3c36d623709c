"""Uniform k-level quantization and its smooth-staircase relaxation."""

from keras import ops

from dab_keras import _validation
from dab_keras.ops import _temperature


def _grid(levels, min_value, max_value):
    levels = _validation.check_int("levels", levels, 2)
    min_value, max_value = _validation.check_range(min_value, max_value)
    return levels, min_value, (max_value - min_value) / (levels - 1)


def quantize(x, levels, min_value=-1.0, max_value=1.0):
    r"""Rounds `x` to the nearest of `levels` evenly spaced values in `[min_value, max_value]`.

    $$
    q(x) = a + \Delta \cdot \operatorname{round}\!\left(\operatorname{clip}\!\left(\tfrac{x-a}{\Delta},
        0, L-1\right)\right), \qquad \Delta = \frac{b-a}{L-1}.
    $$

    Inputs outside the range are clipped first; exact midpoints round half to even (as `keras.ops.round`).
    `NaN` stays `NaN`; `±inf` map to the range's ends.

    Args:
        x: Floating-point tensor.
        levels: Number of levels L, an integer >= 2.
        min_value: Lowest level a. Defaults to `-1.0`.
        max_value: Highest level b, > `min_value`. Defaults to `1.0`.

    Returns:
        A tensor of `x`'s shape and dtype whose entries are levels.

    Raises:
        ValueError: if `levels` is not an integer >= 2, `min_value` or `max_value` is not finite, or
            `min_value >= max_value`.

    Examples:
        >>> import numpy as np
        >>> np.asarray(quantize(np.array([-3.0, -0.4, 0.2, 0.9]), levels=3)).tolist()
        [-1.0, 0.0, 0.0, 1.0]
    """
    levels, a, step = _grid(levels, min_value, max_value)
    x = ops.convert_to_tensor(x)
    u = ops.clip((x - a) / step, 0.0, float(levels - 1))
    out = a + step * ops.round(u)
    return ops.where(ops.isnan(x), x, out)


def soft_quantize(x, levels, temperature, min_value=-1.0, max_value=1.0):
    r"""Smooth staircase: a sum of `levels - 1` sigmoids, tending to `quantize` as τ → 0.

    $$
    \tilde q(x) = a + \Delta \sum_{j=1}^{L-1} \sigma\!\left(\frac{u - (j - \tfrac12)}{\tau}\right),
    \qquad u = \frac{x - a}{\Delta},
    $$

    so each step is a sigmoid centred on the midpoint between two levels, with width τ measured in
    level spacings. The output lies in (a, b) and its gradient
    $\sum_j \sigma'(\cdot)/\tau$ is finite for finite `x`. Unlike `quantize`, inputs are not clipped:
    far outside the range the staircase is flat at a or b.

    Args:
        x: Floating-point tensor.
        levels: Number of levels L, an integer >= 2.
        temperature: τ > 0, in units of the level spacing, a float or scalar tensor (a number <= 0, NaN or ±inf raises; a tensor τ is not read back, so an invalid one gives NaN outputs).
        min_value: Lowest level a. Defaults to `-1.0`.
        max_value: Highest level b, > `min_value`. Defaults to `1.0`.

    Returns:
        A tensor of `x`'s shape and dtype with values in [a, b].

    Raises:
        ValueError: if `levels` is not an integer >= 2, `min_value` or `max_value` is not finite, or
            `min_value >= max_value`.
        ValueError: if `temperature` is a number that is not finite and > 0.

    Examples:
        >>> import numpy as np
        >>> y = soft_quantize(np.array([-3.0, -0.4, 0.2, 0.9]), levels=3, temperature=0.01)
        >>> np.round(np.asarray(y), 3).tolist()
        [-1.0, 0.0, 0.0, 1.0]
    """
    levels, a, step = _grid(levels, min_value, max_value)
    x = ops.convert_to_tensor(x)
    tau = _temperature.temperature(temperature, x.dtype)
    thresholds = ops.cast(ops.arange(1, levels), x.dtype) - 0.5
    u = ops.expand_dims((x - a) / step, -1)
    return a + step * ops.sum(ops.sigmoid((u - thresholds) / tau), axis=-1)
