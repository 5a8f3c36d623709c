"""Straight-through estimator: hard forward, surrogate backward."""

import keras
from keras import ops

from dab_keras import _validation
from dab_keras.estimators.base import SURROGATES, Estimator, bridge, default_surrogate


@keras.saving.register_keras_serializable(package="dab_keras.estimators", name="StraightThrough")
class StraightThrough(Estimator):
    r"""Straight-through estimator: the hard op forward, a surrogate's gradient backward.

    $$ y = h(x), \qquad \frac{\partial L}{\partial x} = J_s(x)^\top \frac{\partial L}{\partial y}, $$

    where the surrogate $s$ is

    - `"identity"`: $s(x) = x$, so the gradient passes through unchanged (Bengio et al. 2013); with
      `clip_value=c` it is zeroed where $|x| > c$ (larq's `ste_sign` for `c = 1`). Available for the
      element-wise ops (`Sign`, `Quantize`) and `VectorQuantize` (the VQ-VAE copy gradient).
    - `"relaxation"`: the op's continuous relaxation at temperature τ, e.g. straight-through softmax for
      `ArgMax`, straight-through Gumbel for `ArgMax(stochastic=True)`, a straight-through relaxed
      permutation for `Sort`, soft top-k for `TopK`, tanh for `Sign`.
    - `"reinmax"`: for a sample (`ArgMax(stochastic=True)` in training, or `ArgMax` / `Sign` called
      with `noise=`), ReinMax's gradient (Liu et al. 2023; `dab_keras.estimators.reinmax_surrogate`):
      a second-order correction of straight-through's $J_\mu(\ell)^\top u$ that uses the sample itself,
      where μ is the sample's mean given its logits ℓ. No τ.
    - `"auto"` (default): identity where the op has one, relaxation otherwise.

    Args:
        clip_value: Optional float > 0; with the identity surrogate, zero gradient where
            `abs(x) > clip_value`. Defaults to `None` (no clipping).
        surrogate: `"auto"`, `"identity"`, `"relaxation"` or `"reinmax"`. Defaults to `"auto"`.
        temperature: τ > 0 of the relaxation surrogate. The layer keeps it in a non-trainable variable
            that `dab_keras.callbacks.TemperatureSchedule` can anneal. Defaults to `1.0`.

    Raises:
        ValueError: for an invalid argument. When the layer runs in training: `surrogate="identity"`
            for an op without an identity surrogate (`ArgMax`, `Sort`, `TopK`), `surrogate="reinmax"`
            for a call that draws no sample, or `clip_value` set where the identity is not used.

    Examples:
        >>> import numpy as np
        >>> import dab_keras
        >>> layer = dab_keras.layers.Sign(estimator=StraightThrough(clip_value=1.0))
        >>> np.asarray(layer(np.array([[-0.5, 2.0]]), training=True)).tolist()  # hard in training too
        [[-1.0, 1.0]]
        >>> sort = dab_keras.layers.Sort(estimator=StraightThrough(surrogate="relaxation", temperature=0.1))

    References:
        Bengio, Léonard & Courville, "Estimating or Propagating Gradients Through Stochastic Neurons for
        Conditional Computation", 2013, arXiv:1308.3432.
        Liu, Zhao, Cheng, Gao & Han, "Bridging Discrete and Backpropagation: Straight-Through and
        Beyond", NeurIPS 2023, arXiv:2304.08612 (ReinMax).
    """

    name = "straight_through"

    def __init__(self, clip_value=None, surrogate="auto", temperature=1.0):
        if clip_value is not None:
            clip_value = _validation.check_positive_float("clip_value", clip_value)
        self.clip_value = clip_value
        self.surrogate = _validation.check_one_of("surrogate", surrogate, SURROGATES)
        self.temperature = _validation.check_positive_float("temperature", temperature)

    def __call__(self, op, x, hard, state):
        if self.clip_value is not None and self.surrogate != "identity":
            if self.surrogate in ("relaxation", "reinmax") or op.identity_surrogate(x) is None:
                raise ValueError(
                    f"`clip_value` applies to the identity surrogate only, and {type(op).__name__} uses its "
                    f"relaxation here (surrogate={self.surrogate!r}). Received: clip_value={self.clip_value}"
                )
        s = default_surrogate(op, x, state.temperature, self.surrogate)
        if self.clip_value is not None:
            s = ops.where(ops.abs(x) <= self.clip_value, s, ops.stop_gradient(s))
        return bridge(hard, s)

    def get_config(self):
        return {"clip_value": self.clip_value, "surrogate": self.surrogate, "temperature": self.temperature}
