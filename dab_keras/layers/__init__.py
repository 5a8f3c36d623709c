"""Keras layers: each runs a hard op and trains through the estimator you choose.

| layer | hard forward |
|---|---|
| `Sign(margin=0.0)` | sign, or ternary with a margin |
| `Quantize(levels, min_value, max_value)` | k-level uniform quantization |
| `VectorQuantize(num_codes, code_dim)` | nearest codebook vector |
| `ArgMax(axis, stochastic, seed)` | one-hot argmax, or a one-hot Gumbel-max sample |
| `Sort(axis, direction, output_mode, relaxation)` | sorted values, permutation matrix or indices |
| `TopK(k, axis, output_mode)` | k-hot mask or the kept values |
| `Bridge(hard_fn, approximator, gamma)` | any function you pass, bridged by DAB (alias: `DAB`) |
"""

from dab_keras.layers.approximators import AxisMLP, ElementwiseMLP
from dab_keras.layers.base import DiscreteLayer
from dab_keras.layers.binary import Sign
from dab_keras.layers.dab import Bridge
from dab_keras.layers.quantization import Quantize
from dab_keras.layers.selection import ArgMax, TopK
from dab_keras.layers.sorting import Sort
from dab_keras.layers.vq import VectorQuantize

#: The former name of `Bridge` (it clashed with the estimator `dab_keras.estimators.DAB`).
DAB = Bridge

__all__ = [
    "DAB",
    "Bridge",
    "ArgMax",
    "AxisMLP",
    "DiscreteLayer",
    "ElementwiseMLP",
    "Quantize",
    "Sign",
    "Sort",
    "TopK",
    "VectorQuantize",
]
