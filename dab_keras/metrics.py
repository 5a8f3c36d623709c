"""Ranking metrics: Spearman's rank correlation, exact (no relaxation)."""

import keras
from keras import ops

from dab_keras import losses
from dab_keras import ops as dab_ops


def _spearman(y_true, y_pred):
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    return losses._rank_correlation(dab_ops.rank(y_true), dab_ops.rank(y_pred))


@keras.saving.register_keras_serializable(package="dab_keras", name="SpearmanCorrelation")
class SpearmanCorrelation(keras.metrics.MeanMetricWrapper):
    r"""Mean over examples of Spearman's rank correlation along the last axis.

    $$ \rho = \operatorname{corr}\big(\operatorname{rank}(y), \operatorname{rank}(\hat y)\big), $$

    with exact ranks, ties averaged (`dab_keras.ops.rank`), as `scipy.stats.spearmanr`; an example whose
    targets or predictions are all tied counts as 0. In [-1, 1], higher is better. The training
    counterpart is `dab_keras.losses.SpearmanLoss`.

    Args:
        name: Defaults to `"spearman_correlation"`.
        dtype: Metric dtype. Defaults to `None`.

    Examples:
        >>> import numpy as np
        >>> metric = SpearmanCorrelation()
        >>> metric.update_state(np.array([[1.0, 2.0, 3.0]]), np.array([[0.2, 0.1, 0.3]]))
        >>> round(float(metric.result()), 4)
        0.5
    """

    def __init__(self, name="spearman_correlation", dtype=None):
        super().__init__(_spearman, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
