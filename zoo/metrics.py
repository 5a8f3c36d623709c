"""Test metrics in NumPy shared by the zoo's tasks (computed on `predict` outputs, in float64)."""

import numpy as np


def sparse_nll(logits, labels):
    """−log softmax(logits)[label] over the last axis (NumPy, float64-safe): shape of `labels`.

    Computed with the max subtracted first, so large logits do not overflow.

    Args:
        logits: NumPy array `(..., C)`.
        labels: Integer array (or list) of shape `logits.shape[:-1]` with values in [0, C).

    Returns:
        A NumPy array of shape `labels.shape` (the dtype of `logits`, or float64 for integer logits).

    Examples:
        >>> import numpy as np
        >>> np.round(sparse_nll(np.zeros((2, 4)), [0, 3]), 4).tolist()  # log 4
        [1.3863, 1.3863]
    """
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probs, np.asarray(labels).astype("int64")[..., None], axis=-1)[..., 0]
