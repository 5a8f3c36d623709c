"""Estimators the study compares against that the library does not ship.

`IdentityStraightThrough` is the baseline of the DAB paper's sort experiments (Ramapuram & Webb,
arXiv:1905.03658): the hard sort forward, and the upstream gradient handed to the input *unpermuted*,
as if the op were the identity. The library's `StraightThrough` refuses `surrogate="identity"` for
`Sort` (its output is a permutation of the input, not a copy in place) and uses the relaxed permutation
instead; this class exists to reproduce the paper's comparison, not as a recommendation.
"""

import keras

from dab_keras import ops as dab_ops
from dab_keras.estimators import DAB, Estimator, bridge
from dab_keras.estimators.dab import approximation_error, approximator_output


@keras.saving.register_keras_serializable(package="benchmarks.study", name="IdentityStraightThrough")
class IdentityStraightThrough(Estimator):
    r"""Hard forward, identity backward: $y = h(x)$, $\partial L / \partial x = \partial L / \partial y$.

    For `Sort(output_mode="values")` the gradient of the i-th sorted value goes to the i-th *input*
    (not to the input that holds that value). Needs an op whose hard output has the input's shape
    (`Sign`, `Quantize`, `Sort` values or ranks, `TopK` values).

    Raises:
        ValueError: in training, when the hard output's shape is not the input's (e.g. a permutation
            matrix).

    Examples:
        >>> import numpy as np
        >>> import dab_keras
        >>> layer = dab_keras.layers.Sort(estimator=IdentityStraightThrough())
        >>> np.asarray(layer(np.array([[2.0, -1.0]]), training=True)).tolist()
        [[-1.0, 2.0]]
    """

    name = "identity"

    def __call__(self, op, x, hard, state):
        del state
        if tuple(hard.shape) != tuple(x.shape):
            raise ValueError(
                "The identity straight-through estimator needs a hard output shaped like the op's input "
                f"({type(op).__name__} gives {tuple(hard.shape)} for an input of {tuple(x.shape)}). "
                f"Received: output shape {tuple(hard.shape)}"
            )
        return bridge(hard, x)

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="benchmarks.study", name="ExactSortGradient")
class ExactSortGradient(Estimator):
    r"""The true gradient of sorted values: $\partial L / \partial x = P^\top \, \partial L / \partial y$.

    `Sort(output_mode="values")` is piecewise linear ($y = P x$ with $P$ constant between ties), so its
    gradient exists almost everywhere: each sorted value's gradient goes back to the input that holds it
    (as in GroupSort networks). A reference for the estimators of the sort non-linearity, not an estimator
    of an unknown gradient; only for `Sort` in `"values"` mode.

    Raises:
        ValueError: in training, for another op or output mode.

    Examples:
        >>> import numpy as np
        >>> import dab_keras
        >>> layer = dab_keras.layers.Sort(estimator=ExactSortGradient())
        >>> np.asarray(layer(np.array([[2.0, -1.0]]), training=True)).tolist()
        [[-1.0, 2.0]]
    """

    name = "exact"

    def __call__(self, op, x, hard, state):
        del state
        if getattr(op, "output_mode", None) != "values" or not hasattr(op, "direction"):
            raise ValueError(
                "ExactSortGradient applies to `Sort(output_mode='values')` only. Received: "
                f"{type(op).__name__} with output_mode={getattr(op, 'output_mode', None)!r}"
            )
        order = keras.ops.stop_gradient(dab_ops.argsort(x, op.direction))
        return bridge(hard, keras.ops.take_along_axis(x, order, axis=-1))

    def get_config(self):
        return {}


def _sum_of_squares(t):
    return keras.ops.sum(keras.ops.square(keras.ops.cast(t, "float32")))


class _ResidualVariant(DAB):
    """A residual DAB whose bridge a subclass changes; the approximator trains as in `DAB`."""

    def __init__(self, **kwargs):
        kwargs.setdefault("residual", True)
        if not kwargs["residual"]:
            raise ValueError(f"{type(self).__name__} changes the residual DAB's bridge: it needs residual=True. "
                             "Received: residual=False")
        super().__init__(**kwargs)


@keras.saving.register_keras_serializable(package="benchmarks.study", name="GainMatchedDAB")
class GainMatchedDAB(_ResidualVariant):
    r"""Residual DAB whose backward keeps g's direction and straight-through's size (a screened candidate).

    The bridge sends $a \cdot J_g(x)^\top u$ with one constant per batch,
    $a = \lVert J_s \rVert_F / \lVert J_g \rVert_F$ ($s$ the op's straight-through surrogate, $g = s + c$),
    both Frobenius norms estimated from the same random directions r by central differences,
    $\lVert J r \rVert \approx \lVert f(x + \epsilon r) - f(x - \epsilon r) \rVert / 2\epsilon$. The
    approximator trains as in `DAB`. Motivation: under Adam a bridge whose gain drifts over the first few
    hundred steps (the codebook's contraction on `VectorQuantize`, a transient 1.8× on `ArgMax`) changes the
    step size while the second-moment average remembers the earlier gradients.
    """

    name = "dab_gain"

    def build(self, layer, op_shape):
        state = super().build(layer, op_shape)
        state.probe_seed = keras.random.SeedGenerator(1234, name="probe_seed")
        return state

    def __call__(self, op, x, hard, state):
        base = self._base(op, x, state)
        state.record(self._fit(op, x, hard, state, base), self.gamma)
        xs = keras.ops.stop_gradient(keras.ops.cast(x, "float32"))
        scale = keras.ops.sqrt(keras.ops.mean(keras.ops.square(xs))) + 1e-6
        eps = 1e-2 * scale
        r = keras.random.normal(keras.ops.shape(xs), seed=state.probe_seed)
        plus, minus = xs + eps * r, xs - eps * r
        ds = self._base(op, plus, state) - self._base(op, minus, state)
        dg = self.approximate(op, plus, state) - self.approximate(op, minus, state)
        gain = keras.ops.stop_gradient(keras.ops.sqrt(_sum_of_squares(ds) / (_sum_of_squares(dg) + 1e-20)))
        return bridge(hard, gain * self._bridge_input(state.approximator, x, base))


@keras.saving.register_keras_serializable(package="benchmarks.study", name="ShrunkDAB")
class ShrunkDAB(_ResidualVariant):
    r"""Residual DAB whose correction is shrunk by its fitted benefit on the batch (a screened candidate).

    The bridge is $s + \alpha c$ with $\alpha = \operatorname{clip}(\sum \langle h - s, c\rangle /
    \sum \lVert c \rVert^2, 0, 1)$ over the batch (held constant): the least-squares weight of the
    correction on inputs it has not been fitted to yet. A correction that does not bring g closer to h
    than its base is switched off (DAB is then straight-through), one that does is used in full.
    """

    name = "dab_shrink"

    def __call__(self, op, x, hard, state):
        base = self._base(op, x, state)
        state.record(self._fit(op, x, hard, state, base), self.gamma)
        base = keras.ops.cast(base, "float32")
        correction = approximator_output(state.approximator, x)
        residual = keras.ops.stop_gradient(keras.ops.cast(hard, "float32") - base)
        c = keras.ops.stop_gradient(correction)
        alpha = keras.ops.sum(residual * c) / (keras.ops.sum(keras.ops.square(c)) + 1e-12)
        alpha = keras.ops.stop_gradient(keras.ops.clip(alpha, 0.0, 1.0))
        return bridge(hard, base + alpha * correction)


@keras.saving.register_keras_serializable(package="benchmarks.study", name="SmoothedTargetDAB")
class SmoothedTargetDAB(_ResidualVariant):
    r"""Residual DAB whose approximator fits the op under input noise (a screened candidate).

    The DAB loss fits g = s + c to $h(x + \sigma\epsilon)$, $\epsilon \sim N(0, I)$ drawn afresh each
    step, with $\sigma = \kappa \cdot \mathrm{rms}(x)$ over the batch (held constant), instead of $h(x)$:
    its least-squares limit is the Gaussian smoothing $E_\epsilon[h(x + \sigma\epsilon)]$, whose Jacobian
    is not zero between the op's jumps (a well-fitted g of $h$ itself tends to $h$'s zero Jacobian there:
    the contraction seen on `VectorQuantize`) and whose sharpness follows the input's scale (on `ArgMax`
    the softmax base sharpens as the logits grow). The forward is still $h(x)$ and the bridge $J_g(x)^\top u$.
    The reported approximation error is g's error against $h(x)$, as for `DAB`.

    Args:
        noise: κ > 0, the noise's standard deviation relative to the input's RMS. Defaults to `0.3`.
        **kwargs: `DAB` arguments (residual only).
    """

    name = "dab_smooth"

    def __init__(self, noise=0.3, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(noise, (int, float)) and noise > 0):
            raise ValueError(f"`noise` must be a number > 0. Received: noise={noise!r}")
        self.noise = float(noise)

    def build(self, layer, op_shape):
        state = super().build(layer, op_shape)
        state.noise_seed = keras.random.SeedGenerator(4321, name="noise_seed")
        return state

    def __call__(self, op, x, hard, state):
        approximator = state.approximator
        base = self._base(op, x, state)
        xs = keras.ops.stop_gradient(keras.ops.cast(x, "float32"))
        sigma = self.noise * keras.ops.sqrt(keras.ops.mean(keras.ops.square(xs)))
        noisy = xs + sigma * keras.random.normal(keras.ops.shape(xs), seed=state.noise_seed)
        target = keras.ops.stop_gradient(keras.ops.cast(op.hard(keras.ops.cast(noisy, x.dtype)), "float32"))
        self._fit(op, x, target, state, base)
        state.record(keras.ops.stop_gradient(approximation_error(approximator, x, hard, base)), self.gamma)
        return bridge(hard, self._bridge_input(approximator, x, base))

    def get_config(self):
        return {**super().get_config(), "noise": self.noise}


@keras.saving.register_keras_serializable(package="benchmarks.study", name="WarmupDAB")
class WarmupDAB(_ResidualVariant):
    r"""Residual DAB whose correction enters the bridge over the first steps (a screened candidate).

    The bridge is $s + w_t c$ with $w_t = \min(1, t / T)$, $t$ the number of training steps the layer
    has taken before this one (a non-trainable counter, saved with the layer) and $T$ = `warmup_steps`:
    at step 0 DAB's gradient is straight-through's, from step $T$ on it is `DAB`'s. The approximator
    trains from step 0 as in `DAB`, and its reported error is $g = s + c$'s. Motivation: under Adam a
    bridge whose gain drifts within a few dozen steps (the codebook's contraction on `VectorQuantize`)
    changes the step size while the second-moment average still holds the earlier gradients; spreading
    the drift over $T = 1/(1 - \beta_2) = 1{,}000$ steps, the horizon of Adam's second moment with its
    default $\beta_2 = 0.999$, keeps the step size that average sets.

    Args:
        warmup_steps: T > 0, the number of steps over which the correction's weight rises from 0 to 1.
            Defaults to `1000`.
        **kwargs: `DAB` arguments (residual only).
    """

    name = "dab_warmup"

    def __init__(self, warmup_steps=1000, **kwargs):
        super().__init__(**kwargs)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 1:
            raise ValueError(f"`warmup_steps` must be an integer >= 1. Received: warmup_steps={warmup_steps!r}")
        self.warmup_steps = warmup_steps

    def build(self, layer, op_shape):
        state = super().build(layer, op_shape)
        state.warmup_step = state.add_weight(shape=(), initializer="zeros", trainable=False, name="warmup_step")
        return state

    def correction_weight(self, state):
        """$w_t = \\min(1, t / T)$ for the layer's next training step (a float32 scalar)."""
        return keras.ops.minimum(keras.ops.cast(state.warmup_step, "float32") / float(self.warmup_steps), 1.0)

    def __call__(self, op, x, hard, state):
        base = self._base(op, x, state)
        state.record(self._fit(op, x, hard, state, base), self.gamma)
        weight = keras.ops.stop_gradient(self.correction_weight(state))
        state.warmup_step.assign(state.warmup_step + 1.0)
        correction = approximator_output(state.approximator, x)
        return bridge(hard, keras.ops.cast(base, "float32") + weight * correction)

    def get_config(self):
        return {**super().get_config(), "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="benchmarks.study", name="MeanFittedDAB")
class MeanFittedDAB(_ResidualVariant):
    r"""Residual DAB of a sample whose correction sees the sample's logits, not the perturbed ones.

    For a sampled op ($h(\ell + \epsilon)$: `ArgMax(stochastic=True)`, or a call with `noise=`) the DAB
    fits $g = s + c$ with $c = c_\theta(\ell)$, a function of the logits $\ell$ alone, to the hard sample:
    the least-squares limit of the correction is then the noise average
    $c^\star(\ell) = E_\epsilon[h(\ell + \epsilon) - s(\ell + \epsilon)]$, where `DAB` fits the one-hot of
    each draw ($c_\theta(\ell + \epsilon)$, whose limit is $h - s$ itself: a sharper function than $s$,
    whose Jacobian favours sharper posteriors). The bridge is $s(\ell + \epsilon) + c_\theta(\ell)$, so

    $$ E_\epsilon\big[J_s(\ell + \epsilon)\big] + J_{c^\star}(\ell) = J_{E_\epsilon[h]}(\ell), $$

    the Jacobian of the sample's mean (the softmax of ℓ for a Gumbel-max sample): for a loss linear in
    the code the bridge's gradient is unbiased in expectation once $c_\theta$ fits, whatever τ. The
    forward is $h(\ell + \epsilon)$. Outside a sampling call (no logits known) the correction sees the
    op's input, as in `DAB`. Meant for the relaxation's base (`surrogate="auto"`): with ReinMax's the
    gradient of $s$ is not the relaxation's, and the identity above does not hold.
    """

    name = "dab_mean"

    @staticmethod
    def correction_input(op, x):
        """The correction's input: the sample's logits inside a sampling call, else `x`."""
        logits = getattr(op, "sampled_logits", None)
        return x if logits is None else logits

    def approximate(self, op, x, state):
        base = self._base(op, x, state, in_sample=False)
        return self._bridge_input(state.approximator, self.correction_input(op, x), base)

    def __call__(self, op, x, hard, state):
        base = self._base(op, x, state)
        inputs = self.correction_input(op, x)
        state.record(self._fit(op, inputs, hard, state, base), self.gamma)
        return bridge(hard, self._bridge_input(state.approximator, inputs, base))

    def observe(self, op, x, hard, state):
        inputs = self.correction_input(op, x)
        error = approximation_error(state.approximator, inputs, hard, self._base(op, x, state, in_sample=False))
        state.record(keras.ops.stop_gradient(error), self.gamma)
