"""Vector quantization against a codebook, and its soft-assignment relaxation."""

from keras import ops

from dab_keras.ops import _scale, _temperature
from dab_keras.ops._nan import flag_nan_slices


def squared_distances(z, codebook):
    r"""Squared Euclidean distances between vectors and codes.

    $$ d_{k}(z) = \lVert z - e_k \rVert^2 = \lVert z \rVert^2 - 2\, z \cdot e_k + \lVert e_k \rVert^2, $$

    computed with one matrix product in the expanded form and clipped at 0 against round-off.

    Args:
        z: Floating-point tensor of shape `(..., D)`.
        codebook: Tensor of shape `(K, D)` (cast to `z`'s dtype).

    Returns:
        A tensor of shape `(..., K)` and `z`'s dtype, >= 0.

    Examples:
        >>> import numpy as np
        >>> codebook = np.array([[0.0, 0.0], [1.0, 0.0]])
        >>> np.asarray(squared_distances(np.array([[0.0, 0.0], [1.0, 1.0]]), codebook)).tolist()
        [[0.0, 1.0], [2.0, 1.0]]
    """
    z = ops.convert_to_tensor(z)
    codebook = ops.cast(codebook, z.dtype)
    d = (
        ops.sum(ops.square(z), axis=-1, keepdims=True)
        - 2.0 * ops.matmul(z, ops.transpose(codebook))
        + ops.sum(ops.square(codebook), axis=-1)
    )
    return ops.maximum(d, 0.0)


def _relative_distances(z, codebook):
    r"""Squared distances relative to the nearest code, in units of a per-vector scale: `(r, c)`.

    $$ \lVert z - e_k \rVert^2 - \min_l \lVert z - e_l \rVert^2 = c^2 r_k, \qquad
    c \approx \max(\max_d |z_d|, \max_{k,d} |e_{kd}|) \text{ (a power of two)}, $$

    computed from $z / c$ and $E$ divided by its own power-of-two scale, so every intermediate is bounded by a few times the code size
    whatever the inputs' scale (`squared_distances` overflows to `inf - inf` beyond about 1e19 in float32).
    `r >= 0` and is exactly 0 at the nearest code.
    """
    z = ops.convert_to_tensor(z)
    codebook = ops.cast(codebook, z.dtype)
    code_scale = _scale.power_of_two_scale(ops.max(ops.abs(codebook), initial=0.0))
    scale = _scale.power_of_two_scale(ops.max(ops.abs(z), axis=-1, keepdims=True, initial=0.0))
    scale = ops.maximum(scale, code_scale)
    rho = code_scale / scale  # <= 1, a power of two
    codes = codebook / code_scale
    r = rho * rho * ops.sum(ops.square(codes), axis=-1) - 2.0 * rho * ops.matmul(z / scale, ops.transpose(codes))
    return r - ops.stop_gradient(ops.min(r, axis=-1, keepdims=True, initial=float("inf"))), scale


def vector_quantize(z, codebook):
    r"""Replaces each vector with its nearest code (Euclidean); ties go to the lowest index.

    $$ q(z) = e_{k^*}, \qquad k^* = \arg\min_k \lVert z - e_k \rVert^2. $$

    Args:
        z: Floating-point tensor of shape `(..., D)`.
        codebook: Tensor of shape `(K, D)` (cast to `z`'s dtype).

    Returns:
        A tuple `(quantized, indices)`: `quantized` of `z`'s shape, `indices` int32 of shape `(...)`.
        A vector holding a NaN gives a NaN vector and index -1.

    Examples:
        >>> import numpy as np
        >>> codebook = np.array([[0.0, 0.0], [1.0, 1.0]])
        >>> q, idx = vector_quantize(np.array([[0.2, 0.1], [0.9, 0.7]]), codebook)
        >>> np.asarray(idx).tolist(), np.asarray(q).tolist()
        ([0, 1], [[0.0, 0.0], [1.0, 1.0]])

    References:
        van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning", 2017,
        arXiv:1711.00937.
    """
    z = ops.convert_to_tensor(z)
    indices = ops.cast(ops.argmin(_relative_distances(z, codebook)[0], axis=-1), "int32")
    quantized = flag_nan_slices(z, ops.take(ops.cast(codebook, z.dtype), indices, axis=0))
    indices = ops.squeeze(flag_nan_slices(z, ops.expand_dims(indices, -1), fill=-1), -1)
    return quantized, indices


def soft_vector_quantize(z, codebook, temperature):
    r"""Soft assignment: the softmax(−distance/τ)-weighted mean of the codes.

    $$
    \tilde q(z) = \sum_k w_k e_k, \qquad w = \operatorname{softmax}\!\left(-\lVert z - e_k\rVert^2/\tau\right),
    $$

    which tends to `vector_quantize` as τ → 0 (away from ties). τ is in the units of squared distance.
    The distances are computed relative to the nearest code and in units of the inputs' scale, so inputs
    of any finite magnitude give finite weights and gradients (1e30 gives the nearest code).

    Args:
        z: Floating-point tensor of shape `(..., D)`.
        codebook: Tensor of shape `(K, D)` (cast to `z`'s dtype).
        temperature: τ > 0, a float or scalar tensor (a number <= 0, NaN or ±inf raises; a tensor τ is not read back, so an invalid one gives NaN outputs).

    Returns:
        A tensor of `z`'s shape and dtype: each vector a convex combination of the codes.

    Raises:
        ValueError: if `temperature` is a number that is not finite and > 0.

    Examples:
        >>> import numpy as np
        >>> codebook = np.array([[0.0, 0.0], [1.0, 1.0]])
        >>> z = np.array([[0.2, 0.1], [0.5, 0.5]])
        >>> np.round(np.asarray(soft_vector_quantize(z, codebook, temperature=0.01)), 3).tolist()
        [[0.0, 0.0], [0.5, 0.5]]

    References:
        van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning", 2017,
        arXiv:1711.00937 (the hard op); soft assignment as in Agustsson et al., "Soft-to-Hard Vector
        Quantization for End-to-End Learning Compressible Representations", 2017, arXiv:1704.00648.
    """
    z = ops.convert_to_tensor(z)
    tau = _temperature.temperature(temperature, z.dtype)
    r, scale = _relative_distances(z, codebook)
    # -c² r / τ as (c r)(c / τ) with c / τ capped: the nearest code's logit is exactly 0, the others finite
    # or -inf, so huge inputs give the nearest code rather than NaN.
    inverse = ops.minimum(scale / tau, _temperature.largest_finite(z.dtype))
    weights = ops.softmax(-(r * scale) * inverse, axis=-1)
    return ops.matmul(weights, ops.cast(codebook, z.dtype))
