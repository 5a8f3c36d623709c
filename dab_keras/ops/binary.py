"""Sign and ternary (sign with margin) and their tanh relaxation."""

from keras import ops

from dab_keras import _validation
from dab_keras.ops import _temperature


def sign(x, margin=0.0):
    r"""Hard sign, or ternary sign with a dead zone of half-width `margin`.

    $$
    \operatorname{sign}_m(x) = \begin{cases} +1 & x > m \\ 0 & |x| \le m \\ -1 & x < -m \end{cases}
    \qquad (m > 0), \qquad
    \operatorname{sign}_0(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}
    $$

    With `margin=0` the output is binary and `sign(0) = +1` (not 0, unlike `keras.ops.sign`), so every
    entry is one of two values. `NaN` entries stay `NaN`; `±inf` map to `±1`.

    Args:
        x: Floating-point tensor.
        margin: Half-width of the zero band, a float >= 0. Defaults to `0.0` (binary sign).

    Returns:
        A tensor of `x`'s shape and dtype with entries in {-1, +1} (or {-1, 0, +1} when `margin > 0`).

    Raises:
        ValueError: if `margin` is not a finite number >= 0.

    Examples:
        >>> import numpy as np
        >>> np.asarray(sign(np.array([-2.0, -0.2, 0.0, 0.3, 1.0]), margin=0.25)).tolist()
        [-1.0, 0.0, 0.0, 1.0, 1.0]

    References:
        Ramapuram & Webb, "Improving Discrete Latent Representations With Differentiable Approximation
        Bridges", 2019, arXiv:1905.03658 (signum with margin).
    """
    margin = _validation.check_non_negative_float("margin", margin)
    x = ops.convert_to_tensor(x)
    one = ops.ones_like(x)
    if margin == 0.0:
        out = ops.where(x >= 0, one, -one)
    else:
        out = ops.where(x > margin, one, ops.where(x < -margin, -one, ops.zeros_like(x)))
    return ops.where(ops.isnan(x), x, out)


def soft_sign(x, temperature, margin=0.0):
    r"""Tanh relaxation of `sign`, tending to it as `temperature` → 0.

    $$
    \widetilde{\operatorname{sign}}_0(x) = \tanh(x/\tau), \qquad
    \widetilde{\operatorname{sign}}_m(x) = \tfrac12\left[\tanh\!\left(\tfrac{x-m}{\tau}\right)
        + \tanh\!\left(\tfrac{x+m}{\tau}\right)\right],
    $$

    with gradient $\partial_x \tanh(x/\tau) = (1 - \tanh^2(x/\tau))/\tau$, finite for every finite `x`
    and τ > 0 (it underflows to 0 far from the steps instead of overflowing).

    Args:
        x: Floating-point tensor.
        temperature: τ > 0, a float or scalar tensor (a number <= 0, NaN or ±inf raises; a tensor τ is not read back, so an invalid one gives NaN outputs). Smaller
            is closer to the hard sign.
        margin: Half-width of the zero band, a float >= 0. Defaults to `0.0`.

    Returns:
        A tensor of `x`'s shape and dtype with entries in [-1, 1] (in (-1, 1) until tanh saturates in
        floating point).

    Raises:
        ValueError: if `margin` is not a finite number >= 0.
        ValueError: if `temperature` is a number that is not finite and > 0.

    Examples:
        >>> import numpy as np
        >>> y = soft_sign(np.array([-1.0, 0.0, 1.0]), temperature=0.01)
        >>> np.round(np.asarray(y), 3).tolist()
        [-1.0, 0.0, 1.0]
    """
    margin = _validation.check_non_negative_float("margin", margin)
    x = ops.convert_to_tensor(x)
    tau = _temperature.temperature(temperature, x.dtype)
    if margin == 0.0:
        return ops.tanh(x / tau)
    return 0.5 * (ops.tanh((x - margin) / tau) + ops.tanh((x + margin) / tau))
