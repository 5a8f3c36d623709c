"""`VectorQuantize`: nearest-codebook-vector quantization with a learned codebook."""

import keras
from keras import ops

from dab_keras import _validation
from dab_keras import estimators as estimators_lib
from dab_keras import ops as dab_ops
from dab_keras.layers.approximators import AxisMLP
from dab_keras.layers.base import DiscreteLayer


@keras.saving.register_keras_serializable(package="dab_keras", name="VectorQuantize")
class VectorQuantize(DiscreteLayer):
    r"""Replaces each `code_dim`-vector with its nearest codebook vector, with a chosen estimator.

    Forward: $q(z) = e_{k^*}$, $k^* = \arg\min_k \lVert z - e_k \rVert^2$ over the codebook
    $E \in \mathbb R^{K \times D}$ (a layer weight, `codebook`).

    Gradient to $z$: identity for `"straight_through"` (the VQ-VAE copy gradient), the soft assignment
    $\operatorname{softmax}(-\lVert z - e_k \rVert^2/\tau) E$ for `"relaxed"`, a dense approximator's
    over the code dimension for `"dab"`. The codebook itself learns, in training, from the VQ-VAE loss the
    layer adds (van den Oord et al. 2017), mean over entries:

    $$ L_{\text{VQ}} = \lVert \operatorname{sg}(z) - q \rVert^2 + \beta \lVert z - \operatorname{sg}(q) \rVert^2. $$

    Args:
        num_codes: Codebook size K >= 1.
        code_dim: Vector size D >= 1 (the input's last axis).
        commitment_cost: β >= 0. Defaults to `0.25`.
        codebook_initializer: Initializer of the codebook. Defaults to uniform in ±1, the scale of
            unit-scale inputs (tanh outputs, normalised features): a codebook much smaller than its
            inputs maps them all to the few codes nearest the origin and slows early training (see
            the docs' `VectorQuantize` page). For inputs of another scale, pass an initializer at it.
        return_indices: If `True`, the layer returns `(quantized, indices)` (int32, shape
            `(batch, ...)`). Defaults to `False`.
        estimator: `"straight_through"`, `"relaxed"`, `"dab"` or an `Estimator`.
            Defaults to `"straight_through"`.
        **kwargs: Base layer arguments.

    Input shape: `(batch, ..., code_dim)`, floating point. Output shape: the same (and `(batch, ...)`
    for the indices).

    Metrics (in `fit` and `evaluate` logs, over the epoch's codes): `codebook_usage`, the fraction of
    codes used at least once, and `codebook_perplexity`, $\exp(-\sum_k p_k \log p_k)$ of the code
    frequencies $p$ (from 1, one code, to K, all codes equally often); also as
    `<layer name>_codebook_perplexity`.

    Raises:
        ValueError: for an invalid argument; when built, if the last axis is not `code_dim`.

    Examples:
        >>> import numpy as np
        >>> layer = VectorQuantize(num_codes=8, code_dim=2, return_indices=True)
        >>> quantized, indices = layer(np.random.default_rng(0).normal(size=(3, 2)).astype("float32"))
        >>> tuple(quantized.shape), tuple(indices.shape)
        ((3, 2), (3,))
        >>> bool(np.array_equal(np.asarray(layer.codes(indices)), np.asarray(quantized)))
        True

    References:
        van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning", 2017,
        arXiv:1711.00937.
    """

    def __init__(
        self,
        num_codes,
        code_dim,
        commitment_cost=0.25,
        codebook_initializer=None,
        return_indices=False,
        estimator="straight_through",
        **kwargs,
    ):
        super().__init__(estimator=estimator, **kwargs)
        self.num_codes = _validation.check_int("num_codes", num_codes, 1)
        self.code_dim = _validation.check_int("code_dim", code_dim, 1)
        self.commitment_cost = _validation.check_non_negative_float("commitment_cost", commitment_cost)
        if codebook_initializer is None:
            codebook_initializer = keras.initializers.RandomUniform(-1.0, 1.0)
        self.codebook_initializer = keras.initializers.get(codebook_initializer)
        if not isinstance(return_indices, bool):
            raise ValueError(f"`return_indices` must be a bool. Received: return_indices={return_indices!r}")
        self.return_indices = return_indices

    def build_op(self, shape):
        if shape[-1] != self.code_dim:
            raise ValueError(
                f"The last axis of the inputs must have size `code_dim` ({self.code_dim}). "
                f"Received: input_shape={shape}"
            )
        self.codebook = self.add_weight(
            shape=(self.num_codes, self.code_dim), initializer=self.codebook_initializer, name="codebook"
        )
        self.metric_sums = None
        if not self.estimator.inference_only:
            self.metric_sums = estimators_lib.RunningSums({"counts": (self.num_codes,)}, name="metric_sums")
            keys = ("codebook_usage", "codebook_perplexity", f"{self.name}_codebook_perplexity")
            self.usage = estimators_lib.SumsMetric(self.metric_sums, keys, _usage_results, f"{self.name}_codebook")

    def _codebook(self, x):
        return ops.cast(self.codebook, x.dtype)

    def hard(self, x):
        return dab_ops.vector_quantize(x, self._codebook(x))[0]

    def relax(self, x, temperature):
        return dab_ops.soft_vector_quantize(x, self._codebook(x), temperature)

    def identity_surrogate(self, x):
        return x

    def default_approximator(self, shape):
        return AxisMLP((shape[-1],), dtype=self.dtype_policy, name="approximator")

    def code_indices(self, inputs):
        """Index of the nearest code for each vector of `inputs`: int32 of shape `inputs.shape[:-1]`.

        As with `return_indices=True`, a vector holding a NaN gets index -1.

        Args:
            inputs: Floating-point tensor of shape `(batch, ..., code_dim)`. The layer must be built.

        Returns:
            An int32 tensor of shape `inputs.shape[:-1]` (ties go to the lowest index).

        Raises:
            TypeError: for non-floating-point inputs.
        """
        x = self.op_inputs(ops.convert_to_tensor(inputs))
        return dab_ops.vector_quantize(x, self._codebook(x))[1]

    def codes(self, indices):
        """The codebook vectors at `indices` (any int shape), in the compute dtype.

        Args:
            indices: Integer tensor of any shape with values in [0, `num_codes`). The layer must be built.

        Returns:
            A tensor of shape `(*indices.shape, code_dim)` in the layer's compute dtype.
        """
        return ops.cast(ops.take(self.codebook, indices, axis=0), self.compute_dtype)

    def forward(self, x):
        quantized, indices = dab_ops.vector_quantize(x, self._codebook(x))
        return ops.stop_gradient(quantized), (quantized, indices)

    def finish(self, outputs, x, hard, extra, training):
        quantized, indices = extra
        if training:
            codebook_loss = ops.mean(ops.square(ops.stop_gradient(x) - quantized))
            commitment = ops.mean(ops.square(x - ops.stop_gradient(quantized)))
            self.add_loss(codebook_loss + self.commitment_cost * commitment)
        if self.metric_sums is not None:
            one_hot = ops.one_hot(indices, self.num_codes, dtype="float32")
            self.metric_sums.add({"counts": ops.sum(ops.reshape(one_hot, (-1, self.num_codes)), 0)})
        return (outputs, indices) if self.return_indices else outputs

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        return (input_shape, input_shape[:-1]) if self.return_indices else input_shape

    def output_spec(self, inputs):
        out = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if self.return_indices:
            return out, keras.KerasTensor(inputs.shape[:-1], dtype="int32")
        return out

    def get_config(self):
        return {
            **super().get_config(),
            "num_codes": self.num_codes,
            "code_dim": self.code_dim,
            "commitment_cost": self.commitment_cost,
            "codebook_initializer": keras.initializers.serialize(self.codebook_initializer),
            "return_indices": self.return_indices,
        }


def _usage_results(sums):
    counts = sums.read("counts")
    p = counts / ops.maximum(ops.sum(counts), 1.0)
    entropy = -ops.sum(ops.where(p > 0, p * ops.log(ops.maximum(p, 1e-30)), 0.0))
    perplexity = ops.exp(entropy)
    return ops.mean(ops.cast(counts > 0, "float32")), perplexity, perplexity
