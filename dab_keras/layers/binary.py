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

    def call(self, inputs, training=None, noise=None):
        """Runs the layer: the sign of `inputs`, or of `inputs + noise` read as a sample.

        Args:
            inputs: Floating-point tensor (logits ℓ when `noise` is given).
            training: Whether the layer runs in training.
            noise: Optional logistic noise L shaped like `inputs`, drawn by the caller: the output is
                then the ±1 sample sign(ℓ + L), with P(+1) = σ(ℓ) (margin 0), and estimators can read ℓ
                (`StraightThrough(surrogate="reinmax")`). Defaults to `None`.

        Returns:
            The sign, shaped like `inputs`.
        """
        if noise is None:
            return super().call(inputs, training)
        x = self.op_inputs(inputs)
        return self.run_sample(x, self.noise_inputs(noise, x), training, len(inputs.shape))

    def sample_mean(self, logits):
        """tanh(ℓ / 2) = E[sign(ℓ + L)] for logistic L (a binary sign; `None` with a margin).

        Args:
            logits: ℓ, one per bit.

        Returns:
            The ±1 sample's mean, shaped like `logits`, or `None` for a ternary sign (margin > 0).
        """
        return None if self.margin else keras.ops.tanh(logits / 2.0)

    def sample_logits_of_mean(self, mean):
        """2 artanh(m): logits whose ±1 sample has mean m.

        Args:
            mean: m in (−1, 1) (clipped 1e-6 inside the bounds).

        Returns:
            Logits shaped like `mean`.
        """
        m = keras.ops.clip(mean, -1.0 + 1e-6, 1.0 - 1e-6)
        return keras.ops.log1p(m) - keras.ops.log1p(-m)

    def default_approximator(self, shape):
        return ElementwiseMLP(dtype=self.dtype_policy, name="approximator")

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
