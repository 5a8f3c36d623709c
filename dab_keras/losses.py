"""Ranking losses built on the relaxed ranks of `dab_keras.ops.soft_rank`."""

import keras
from keras import ops

from dab_keras import _validation
from dab_keras import ops as dab_ops


def _rank_correlation(x, y):
    r"""Pearson correlation of two rank tensors along the last axis: Spearman's ρ when both are ranks.

    $$ \rho = \frac{\sum_i (a_i - \bar a)(b_i - \bar b)}{\sqrt{\sum_i (a_i - \bar a)^2 \sum_i (b_i - \bar b)^2}}, $$

    0 for a slice with no spread (all ties). Not public API: used by `SpearmanLoss` and
    `dab_keras.metrics.SpearmanCorrelation`.
    """
    a = x - ops.mean(x, axis=-1, keepdims=True)
    b = y - ops.mean(y, axis=-1, keepdims=True)
    denominator = ops.sqrt(ops.sum(a * a, axis=-1) * ops.sum(b * b, axis=-1))
    safe = ops.where(denominator > 0, denominator, ops.ones_like(denominator))
    return ops.where(denominator > 0, ops.sum(a * b, axis=-1) / safe, ops.zeros_like(denominator))


@keras.saving.register_keras_serializable(package="dab_keras", name="SpearmanLoss")
class SpearmanLoss(keras.losses.Loss):
    r"""One minus Spearman's rank correlation, made differentiable with soft ranks.

    $$ L(y, \hat y) = 1 - \operatorname{corr}\big(\operatorname{rank}(y),\
       \tilde\rho_\tau(\hat y)\big) \in [0, 2], $$

    per example, along the last axis: the targets are ranked exactly (`dab_keras.ops.rank`, ties
    averaged, as `scipy.stats.spearmanr`), the predictions softly (`dab_keras.ops.soft_rank`, computed in
    row blocks, so long lists fit in memory). As τ → 0 the loss tends to 1 − Spearman's ρ. τ is in the
    units of the predictions: with predictions of spread σ, τ ≈ σ / n makes the soft ranks close to the
    hard ones, τ ≈ σ gives smooth, informative gradients.

    Args:
        temperature: τ > 0 of the soft ranks. Defaults to `1.0`.
        relaxation: `"neuralsort"` or `"softsort"`. Defaults to `"neuralsort"`.
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"spearman_loss"`.
        dtype: Loss dtype. Defaults to `None`.

    Raises:
        ValueError: if `temperature` is not a finite number > 0, or for another `relaxation`.

    Examples:
        >>> import numpy as np
        >>> loss = SpearmanLoss(temperature=0.01)
        >>> y_true = np.array([[1.0, 2.0, 3.0, 4.0]])
        >>> round(float(loss(y_true, np.array([[0.1, 0.2, 0.3, 0.4]]))), 4)
        0.0
        >>> round(float(loss(y_true, np.array([[0.4, 0.3, 0.2, 0.1]]))), 4)
        2.0

    References:
        Blondel, Teboul, Berthet & Djolonga, "Fast Differentiable Sorting and Ranking", 2020,
        arXiv:2002.08871 (Spearman's correlation as a loss with soft ranks).
    """

    def __init__(self, temperature=1.0, relaxation="neuralsort", reduction="sum_over_batch_size",
                 name="spearman_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = _validation.check_positive_float("temperature", temperature)
        self.relaxation = _validation.check_one_of("relaxation", relaxation, dab_ops.sorting.RELAXATIONS)

    def call(self, y_true, y_pred):
        """Per-example loss, before the reduction.

        Args:
            y_true: Targets, shape `(batch, ..., n)` (any real dtype; ranked exactly).
            y_pred: Predicted scores, same shape, floating point (ranked softly).

        Returns:
            A tensor of shape `(batch, ...)`: one minus Spearman's ρ over the last axis.
        """
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        soft = dab_ops.soft_rank(y_pred, self.temperature, relaxation=self.relaxation)
        return 1.0 - _rank_correlation(dab_ops.rank(y_true), soft)

    def get_config(self):
        """The constructor arguments, for `keras.losses.deserialize` and `.keras` files.

        Returns:
            A dict with `temperature`, `relaxation` and the base loss's entries.
        """
        return {**super().get_config(), "temperature": self.temperature, "relaxation": self.relaxation}
