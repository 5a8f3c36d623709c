"""`ArgMax` (one-hot, optionally a Gumbel-max sample) and `TopK` (k-hot mask or kept values)."""

import keras
from keras import ops

from dab_keras import _validation
from dab_keras import ops as dab_ops
from dab_keras.layers.approximators import AxisMLP
from dab_keras.layers.base import DiscreteLayer


@keras.saving.register_keras_serializable(package="dab_keras", name="ArgMax")
class ArgMax(DiscreteLayer):
    r"""One-hot argmax along `axis`, or a one-hot categorical sample, with a chosen estimator.

    Forward: $h(x) = \operatorname{one\_hot}(\arg\max_i x_i)$. With `stochastic=True` the input is read as
    logits and, in training, perturbed with fresh Gumbel noise on every call:
    $h = \operatorname{one\_hot}(\arg\max_i (x_i + G_i))$, an exact sample of Categorical(softmax(x)).
    At inference the layer is deterministic, like Keras's stochastic layers (`Dropout`,
    `GaussianNoise`): it returns the mode, the one-hot argmax of the logits, unless
    `sample_at_inference=True` or the call passes `sample=True`.

    Gradient: `"relaxed"` uses $\operatorname{softmax}((x + G)/\tau)$ — Gumbel-Softmax / Concrete when
    stochastic (the same noise as the hard sample), a tempered softmax otherwise; `"straight_through"`
    passes the gradient of that relaxation (straight-through softmax / ST-Gumbel); `"dab"` the gradient
    of a dense approximator over `axis` (fed the perturbed logits when stochastic). For a sample
    (stochastic, or a call with `noise=`) `StraightThrough(surrogate="reinmax")` gives ReinMax's gradient
    and `DAB(surrogate="reinmax")` a residual approximator that starts from it.

    Args:
        axis: Category axis (not the batch axis). Defaults to `-1`.
        stochastic: Sample instead of taking the argmax. Defaults to `False`.
        seed: Seed of the layer's `keras.random.SeedGenerator` (int or `None`). Defaults to `None`.
        sample_at_inference: With `stochastic=True`, also sample at inference (a Gumbel-max sample per
            call) instead of returning the mode. Defaults to `False`.
        estimator: `"straight_through"`, `"relaxed"`, `"dab"` or an `Estimator`.
            Defaults to `"straight_through"`.
        **kwargs: Base layer arguments.

    Input shape: `(batch, ..., n, ...)`, floating point. Output shape: the same, one-hot along `axis`.

    Raises:
        ValueError: for a non-integer `axis`, a non-bool `stochastic` or `sample_at_inference`, or an
            unknown `estimator`; when built, for an `axis` out of range or equal to 0.

    Examples:
        >>> import numpy as np
        >>> np.asarray(ArgMax()(np.array([[0.5, 2.0, -1.0]]))).tolist()
        [[0.0, 1.0, 0.0]]
        >>> sampler = ArgMax(stochastic=True, seed=0)
        >>> logits = np.log(np.array([[0.2, 0.5, 0.3]]))
        >>> np.asarray(sampler(logits)).tolist()  # inference: the mode
        [[0.0, 1.0, 0.0]]
        >>> samples = np.concatenate([np.asarray(sampler(logits, sample=True)) for _ in range(200)])
        >>> bool(samples.sum(axis=0).min() > 0)  # sample=True: draws from Categorical(0.2, 0.5, 0.3)
        True

    References:
        Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax", 2017, arXiv:1611.01144.
        Maddison, Mnih & Teh, "The Concrete Distribution", 2017, arXiv:1611.00712.
    """

    def __init__(
        self,
        axis=-1,
        stochastic=False,
        seed=None,
        sample_at_inference=False,
        estimator="straight_through",
        **kwargs,
    ):
        super().__init__(estimator=estimator, **kwargs)
        if not isinstance(stochastic, bool):
            raise ValueError(f"`stochastic` must be a bool. Received: stochastic={stochastic!r}")
        if not isinstance(sample_at_inference, bool):
            raise ValueError(
                f"`sample_at_inference` must be a bool. Received: sample_at_inference={sample_at_inference!r}"
            )
        self.axis = _validation.check_axis(axis)
        self.stochastic = stochastic
        self.seed = seed
        self.sample_at_inference = sample_at_inference
        self.seed_generator = keras.random.SeedGenerator(seed) if stochastic else None

    def call(self, inputs, training=None, sample=None, noise=None):
        """Runs the layer; `sample` (default: `training or sample_at_inference`) draws Gumbel noise.

        Args:
            inputs: Logits (stochastic) or scores, floating point.
            training: Whether the layer runs in training.
            sample: With `stochastic=True`, whether to sample (`True`) or take the mode (`False`).
                Defaults to `None`: sample in training, and at inference if `sample_at_inference`.
            noise: Optional Gumbel noise shaped like `inputs`, drawn by the caller (e.g. from its own
                seeds): the output is then the sample one_hot(argmax(inputs + G)) with this G, in training
                and at inference, for any `stochastic`. Defaults to `None`.

        Returns:
            The one-hot output along `axis`.

        Raises:
            ValueError: for `noise` with `sample=False`, or `noise` not shaped like `inputs`.
        """
        if noise is not None and sample is False:
            raise ValueError("`noise` draws a sample: it cannot be combined with sample=False. Received: sample=False")
        if sample is None:
            sample = bool(training) or self.sample_at_inference
        x = self.op_inputs(inputs)
        rank = len(inputs.shape)
        if noise is not None:
            return self.run_sample(x, self.noise_inputs(noise, x), training, rank)
        if self.stochastic and sample:
            return self.run_sample(x, dab_ops.gumbel_noise(keras.ops.shape(x), self.seed_generator, x.dtype),
                                   training, rank)
        return self.run_op(x, training, rank)

    def hard(self, x):
        return dab_ops.one_hot_argmax(x)

    def relax(self, x, temperature):
        return dab_ops.tempered_softmax(x, temperature)

    def sample_mean(self, logits):
        """softmax(ℓ): the probabilities of the Gumbel-max sample of logits ℓ.

        Args:
            logits: ℓ, category axis last.

        Returns:
            The one-hot sample's mean, shaped like `logits`.
        """
        return ops.softmax(logits, axis=-1)

    def sample_logits_of_mean(self, mean):
        """log π: logits whose softmax is the probability vector π.

        Args:
            mean: π, probabilities along the last axis (floored at 1e-30 before the log).

        Returns:
            Logits shaped like `mean`.
        """
        return ops.log(ops.maximum(mean, 1e-30))

    def default_approximator(self, shape):
        return AxisMLP((shape[-1],), dtype=self.dtype_policy, name="approximator")

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "stochastic": self.stochastic,
            "seed": self.seed,
            "sample_at_inference": self.sample_at_inference,
        }


TOP_K_MODES = ("mask", "values")


@keras.saving.register_keras_serializable(package="dab_keras", name="TopK")
class TopK(DiscreteLayer):
    r"""k-hot mask of the `k` largest entries along `axis`, or those entries kept in place.

    Forward: $m_i = [x_i$ is among the k largest$]$ (`dab_keras.ops.top_k_mask`);
    `output_mode="values"` returns $x \odot m$ (the k values in place, zeros elsewhere; same shape as
    the input, the k-sparse activation).

    Gradient: `"relaxed"` uses the soft top-k mask $\sigma((x + \nu)/\tau)$ with ν set so the mask sums
    to k (`dab_keras.ops.soft_top_k`); `"straight_through"` passes its gradient; `"dab"` a dense
    approximator's over `axis`.

    Args:
        k: Number of entries kept, 1 <= k <= size of `axis`.
        axis: Axis to select along (not the batch axis). Defaults to `-1`.
        output_mode: `"mask"` or `"values"`. Defaults to `"mask"`.
        estimator: `"straight_through"`, `"relaxed"`, `"dab"` or an `Estimator`.
            Defaults to `"straight_through"`.
        **kwargs: Base layer arguments.

    Input shape: `(batch, ..., n, ...)`, floating point. Output shape: the same.

    Raises:
        ValueError: for an invalid argument; when built, if `k` exceeds the size of `axis` or `axis` is
            out of range or 0.

    Examples:
        >>> import numpy as np
        >>> x = np.array([[0.3, -1.0, 2.0, 0.5]])
        >>> np.asarray(TopK(k=2)(x)).tolist()
        [[0.0, 0.0, 1.0, 1.0]]
        >>> np.asarray(TopK(k=2, output_mode="values")(x)).tolist()
        [[0.0, 0.0, 2.0, 0.5]]

    References:
        Amos, Koltun & Kolter, "The Limited Multi-Label Projection Layer", 2019, arXiv:1905.04638.
    """

    def __init__(self, k, axis=-1, output_mode="mask", estimator="straight_through", **kwargs):
        super().__init__(estimator=estimator, **kwargs)
        self.k = _validation.check_int("k", k, 1)
        self.axis = _validation.check_axis(axis)
        self.output_mode = _validation.check_one_of("output_mode", output_mode, TOP_K_MODES)

    def build_op(self, shape):
        if self.k > shape[-1]:
            raise ValueError(
                f"`k` must be at most the size of `axis` ({shape[-1]}). Received: k={self.k}"
            )

    def _apply_mode(self, x, mask):
        if self.output_mode == "mask":
            return mask
        # Dropped entries are 0 whatever they hold: a -inf (the usual masking value) times 0 is NaN.
        return ops.where(mask > 0, x, ops.zeros_like(x)) * mask

    def hard(self, x):
        return self._apply_mode(x, dab_ops.top_k_mask(x, self.k))

    def relax(self, x, temperature):
        return self._apply_mode(x, dab_ops.soft_top_k(x, self.k, temperature))

    def default_approximator(self, shape):
        return AxisMLP((shape[-1],), dtype=self.dtype_policy, name="approximator")

    def get_config(self):
        return {**super().get_config(), "k": self.k, "axis": self.axis, "output_mode": self.output_mode}
