"""`Sign`: binary or ternary sign, trainable through an estimator."""

import keras

from dab_keras import _validation
from dab_keras import ops as dab_ops
from dab_keras.layers.approximators import ElementwiseMLP
from dab_keras.layers.base import DiscreteLayer


@keras.saving.register_keras_serializable(package="dab_keras", name="Sign")
class Sign(DiscreteLayer):
    r"""Sign (or ternary sign with a margin) with a chosen gradient estimator.

    Forward (inference, and training with `"straight_through"` or `"dab"`): `dab_keras.ops.sign`,

    $$ y = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases} \quad (m = 0), \qquad
       y = \begin{cases} +1 & x > m \\ 0 & |x| \le m \\ -1 & x < -m \end{cases} \quad (m > 0). $$

    Gradient: identity for `"straight_through"` (zero outside `clip_value` if set), the tanh relaxation
    $\tanh(x/\tau)$ (or its two-step version with a margin, `dab_keras.ops.soft_sign`) for `"relaxed"`,
    an element-wise approximator MLP's for `"dab"`. `NaN` inputs give `NaN` outputs.

    Args:
        margin: Half-width m >= 0 of the zero band. Defaults to `0.0` (binary).
        estimator: `"straight_through"`, `"relaxed"`, `"dab"` or an `Estimator`.
            Defaults to `"straight_through"`.
        **kwargs: Base layer arguments.

    Input shape: `(batch, ...)` of any rank >= 1 (`(batch,)` too), floating point. Output shape: the same.

    Raises:
        ValueError: if `margin` is not a finite number >= 0, or for an unknown `estimator`.

    Examples:
        >>> import numpy as np
        >>> layer = Sign(margin=0.5, estimator="dab")
        >>> np.asarray(layer(np.array([[-1.0, 0.2, 0.7]]))).tolist()
        [[-1.0, 0.0, 1.0]]

    References:
        Ramapuram & Webb, "Improving Discrete Latent Representations With Differentiable Approximation
        Bridges", 2019, arXiv:1905.03658.
    """

    def __init__(self, margin=0.0, estimator="straight_through", **kwargs):
        super().__init__(estimator=estimator, **kwargs)
        self.margin = _validation.check_non_negative_float("margin", margin)

    min_rank = 1  # element-wise, like keras.layers.Activation

    def hard(self, x):
        return dab_ops.sign(x, self.margin)

    def relax(self, x, temperature):
        return dab_ops.soft_sign(x, temperature, self.margin)

    def identity_surrogate(self, x):
        return x

    def default_approximator(self, shape):
        return ElementwiseMLP(dtype=self.dtype_policy, name="approximator")

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
