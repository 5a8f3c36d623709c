"""Pure functions: hard (non-differentiable) ops and their continuous relaxations.

Everything here is written with `keras.ops`, holds no state and runs on every Keras backend. Hard ops
have their `keras.ops`-style names (`sign`, `quantize`, `one_hot_argmax`, `top_k_mask`, `sort`,
`permutation_matrix`); relaxations are `soft_*` (or their paper's name: `neural_sort`, `gumbel_softmax`).
"""

from dab_keras.ops.binary import sign, soft_sign
from dab_keras.ops.quantization import quantize, soft_quantize
from dab_keras.ops.selection import (
    gumbel_max,
    gumbel_noise,
    gumbel_softmax,
    one_hot_argmax,
    soft_top_k,
    tempered_softmax,
    top_k_mask,
)
from dab_keras.ops.sorting import argsort, neural_sort, permutation_matrix, soft_sort, sort
from dab_keras.ops.vq import soft_vector_quantize, squared_distances, vector_quantize

__all__ = [
    "argsort",
    "gumbel_max",
    "gumbel_noise",
    "gumbel_softmax",
    "neural_sort",
    "one_hot_argmax",
    "permutation_matrix",
    "quantize",
    "sign",
    "soft_quantize",
    "soft_sign",
    "soft_sort",
    "soft_top_k",
    "soft_vector_quantize",
    "sort",
    "squared_distances",
    "tempered_softmax",
    "top_k_mask",
    "vector_quantize",
]
