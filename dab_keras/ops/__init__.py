"""Pure functions: hard (non-differentiable) ops and their continuous relaxations.

Everything here is written with `keras.ops`, holds no state and runs on every Keras backend. Hard ops
have their `keras.ops`-style names (`sign`, `quantize`, `one_hot_argmax`, `top_k_mask`, `sort`,
`permutation_matrix`, `rank`); relaxations are `soft_*` (or their paper's name: `neural_sort`,
`gumbel_softmax`).

Temperatures: every relaxation takes τ as `temperature` and refuses a number τ <= 0, NaN or ±inf with a
`ValueError` naming `temperature`. A tensor or variable τ is not read back to the host (that would break
`jit`): an invalid one makes the output NaN instead of a silently inverted or collapsed result.
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
from dab_keras.ops.sorting import (
    argsort,
    neural_sort,
    permutation_matrix,
    rank,
    soft_rank,
    soft_sort,
    soft_sort_values,
    sort,
)
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
    "rank",
    "sign",
    "soft_quantize",
    "soft_rank",
    "soft_sign",
    "soft_sort",
    "soft_sort_values",
    "soft_top_k",
    "soft_vector_quantize",
    "sort",
    "squared_distances",
    "tempered_softmax",
    "top_k_mask",
    "vector_quantize",
]
