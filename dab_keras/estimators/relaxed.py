"""Relaxed estimator: a continuous relaxation in training, optionally with a hard forward."""

import keras

from dab_keras import _validation
from dab_keras.estimators.base import Estimator, bridge


@keras.saving.register_keras_serializable(package="dab_keras.estimators", name="Relaxed")
class Relaxed(Estimator):
    r"""Continuous relaxation at temperature τ in training; the hard op at inference.

    $$ y_{\text{train}} = \tilde h_\tau(x) \quad (\texttt{hard=False}), \qquad
    y_{\text{train}} = h(x),\ \frac{\partial L}{\partial x} = J_{\tilde h_\tau}(x)^\top
    \frac{\partial L}{\partial y} \quad (\texttt{hard=True}), $$

    where $\tilde h_\tau$ is the op's relaxation: tanh for `Sign`, a smooth staircase for `Quantize`,
    soft assignment for `VectorQuantize`, softmax (Gumbel-Softmax when stochastic) for `ArgMax`,
    NeuralSort or SoftSort for `Sort`, soft top-k for `TopK`. `hard=True` is the "straight-through"
    variant of the relaxation (e.g. ST-Gumbel). Note that with `hard=False` training and inference see
    different functions; anneal τ (`dab_keras.callbacks.TemperatureSchedule`) to close the gap.

    Args:
        temperature: τ > 0, kept by the layer in a non-trainable variable. Defaults to `1.0`.
        hard: If `True`, output the hard value with the relaxation's gradient. Defaults to `False`.

    Raises:
        ValueError: if `temperature` is not a finite number > 0 or `hard` is not a bool.

    Examples:
        >>> import numpy as np
        >>> import dab_keras
        >>> layer = dab_keras.layers.Sign(estimator=Relaxed(temperature=1.0))
        >>> x = np.array([[-0.5, 2.0]])
        >>> np.round(np.asarray(layer(x, training=True)), 3).tolist()  # tanh(x / τ) in training
        [[-0.462, 0.964]]
        >>> np.asarray(layer(x)).tolist()  # the hard sign at inference
        [[-1.0, 1.0]]

        Straight-through Gumbel-Softmax (a hard one-hot sample, the relaxed sample's gradient):

        >>> layer = dab_keras.layers.ArgMax(stochastic=True, seed=0,
        ...                                 estimator=Relaxed(temperature=0.5, hard=True))

    References:
        Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax", 2017, arXiv:1611.01144.
        Maddison, Mnih & Teh, "The Concrete Distribution", 2017, arXiv:1611.00712.
    """

    name = "relaxed"

    def __init__(self, temperature=1.0, hard=False):
        self.temperature = _validation.check_positive_float("temperature", temperature)
        if not isinstance(hard, bool):
            raise ValueError(f"`hard` must be a bool. Received: hard={hard!r}")
        self.hard = hard

    def __call__(self, op, x, hard, state):
        soft = op.relax(x, state.temperature)
        return bridge(hard, soft) if self.hard else soft

    def get_config(self):
        return {"temperature": self.temperature, "hard": self.hard}
