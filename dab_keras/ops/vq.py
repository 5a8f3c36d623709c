"""Vector quantization against a codebook, and its soft-assignment relaxation."""

from keras import ops

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
    indices = ops.cast(ops.argmin(squared_distances(z, codebook), axis=-1), "int32")
    quantized = flag_nan_slices(z, ops.take(ops.cast(codebook, z.dtype), indices, axis=0))
    indices = ops.squeeze(flag_nan_slices(z, ops.expand_dims(indices, -1), fill=-1), -1)
    return quantized, indices


def soft_vector_quantize(z, codebook, temperature):
    r"""Soft assignment: the softmax(−distance/τ)-weighted mean of the codes.

    $$
    \tilde q(z) = \sum_k w_k e_k, \qquad w = \operatorname{softmax}\!\left(-\lVert z - e_k\rVert^2/\tau\right),
    $$

    which tends to `vector_quantize` as τ → 0 (away from ties). τ is in the units of squared distance.

    Args:
        z: Floating-point tensor of shape `(..., D)`.
        codebook: Tensor of shape `(K, D)` (cast to `z`'s dtype).
        temperature: τ > 0, a float or scalar tensor.

    Returns:
        A tensor of `z`'s shape and dtype: each vector a convex combination of the codes.

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
    tau = ops.cast(temperature, z.dtype)
    weights = ops.softmax(-squared_distances(z, codebook) / tau, axis=-1)
    return ops.matmul(weights, ops.cast(codebook, z.dtype))
