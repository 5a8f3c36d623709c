"""Selection: argmax → one-hot, Gumbel-max sampling, top-k masks, and their relaxations."""

import keras
from keras import ops

from dab_keras import _validation
from dab_keras.ops import _temperature
from dab_keras.ops._nan import flag_nan_slices

# Half-width, in units of τ, of the bracket searched for the soft top-k threshold: σ(±30) is 1 or 0 to
# within 1e-13, so the bracket always contains the root.
_BRACKET = 30.0
_BISECTION_STEPS = 40


def one_hot_argmax(x, axis=-1):
    r"""One-hot encoding of the argmax along `axis` (the first maximum on ties).

    $$ h(x)_i = [\,i = \arg\max_j x_j\,]. $$

    A slice holding `NaN` gives a slice of `NaN`.

    Args:
        x: Floating-point tensor; the size of `axis` must be known.
        axis: Axis to take the argmax over. Defaults to `-1`.

    Returns:
        A tensor of `x`'s shape and dtype, with exactly one 1 per slice along `axis` (zeros elsewhere).

    Examples:
        >>> import numpy as np
        >>> np.asarray(one_hot_argmax(np.array([[0.1, 2.0, -1.0]]))).tolist()
        [[0.0, 1.0, 0.0]]
    """
    x = ops.convert_to_tensor(x)
    n = x.shape[axis]
    out = ops.one_hot(ops.argmax(x, axis=axis), n, axis=axis, dtype=x.dtype)
    return flag_nan_slices(x, out, axis)


def tempered_softmax(x, temperature, axis=-1):
    r"""Softmax at temperature τ, the deterministic relaxation of `one_hot_argmax`.

    $$ \tilde h(x) = \operatorname{softmax}(x/\tau), \qquad
    \partial \tilde h / \partial x = (\operatorname{diag}(\tilde h) - \tilde h \tilde h^\top)/\tau. $$

    As τ → 0 it tends to `one_hot_argmax` (away from ties); as τ → ∞ to the uniform distribution.

    Args:
        x: Floating-point tensor of logits.
        temperature: τ > 0, a float or scalar tensor (a number <= 0, NaN or ±inf raises; a tensor τ is not read back, so an invalid one gives NaN outputs).
        axis: Axis of the softmax. Defaults to `-1`.

    Returns:
        A tensor of `x`'s shape and dtype; each slice along `axis` is positive and sums to 1.

    Raises:
        ValueError: if `temperature` is a number that is not finite and > 0.

    Examples:
        >>> import numpy as np
        >>> x = np.array([[1.0, 2.0, 0.0]])
        >>> np.round(np.asarray(tempered_softmax(x, temperature=1.0)), 3).tolist()
        [[0.245, 0.665, 0.09]]
        >>> np.round(np.asarray(tempered_softmax(x, temperature=0.05)), 3).tolist()
        [[0.0, 1.0, 0.0]]
    """
    x = ops.convert_to_tensor(x)
    return ops.softmax(x / _temperature.temperature(temperature, x.dtype), axis=axis)


def gumbel_noise(shape, seed=None, dtype="float32"):
    r"""Standard Gumbel noise $G = -\log(-\log U)$, $U \sim \mathcal U(10^{-20}, 1)$, always finite.

    $U$ is drawn from $[10^{-20}, 1)$ rather than $[0, 1)$, so in float32 every sample lies in about
    $[-3.83, 16.6]$ (no `-inf` from $U = 0$). Adding it to logits and taking the argmax samples from
    Categorical(softmax(logits)) (`gumbel_max`).

    Args:
        shape: Output shape, a tuple of ints.
        seed: A `keras.random.SeedGenerator` (advanced on each call), an int (the same noise for the same
            int), or `None` (Keras's global seed generator). Defaults to `None`.
        dtype: Floating dtype of the result. Narrower types (float16, bfloat16, as under a mixed-precision
            policy) are drawn in float32 and cast, since $10^{-20}$ underflows to 0 in float16.
            Defaults to `"float32"`.

    Returns:
        A tensor of `shape` and `dtype` holding independent Gumbel(0, 1) samples.

    Examples:
        >>> import numpy as np
        >>> g = np.asarray(gumbel_noise((2, 1000), seed=0))
        >>> g.shape, bool(np.isfinite(g).all()), bool(-4.0 < g.min() and g.max() < 17.0)
        ((2, 1000), True, True)

    References:
        Gumbel, "Statistical Theory of Extreme Values and Some Practical Applications", 1954.
    """
    dtype = keras.backend.standardize_dtype(dtype)
    if not dtype.startswith(("float", "bfloat")):
        raise ValueError(f"gumbel_noise: `dtype` must be a floating dtype such as 'float32'; got {dtype!r}.")
    draw_dtype = "float64" if dtype == "float64" else "float32"
    u = keras.random.uniform(shape, minval=1e-20, maxval=1.0, dtype=draw_dtype, seed=seed)
    return ops.cast(-ops.log(-ops.log(u)), dtype)


def gumbel_max(logits, seed=None, axis=-1):
    r"""One-hot sample from Categorical(softmax(logits)) by the Gumbel-max trick.

    $$ h = \operatorname{one\_hot}(\arg\max_i (\ell_i + G_i)), \qquad G_i \sim \text{Gumbel}(0, 1), $$

    an exact sample: $P(h_i = 1) = \operatorname{softmax}(\ell)_i$. Not differentiable; `gumbel_softmax`
    is its relaxation.

    Args:
        logits: Floating-point tensor of unnormalised log-probabilities.
        seed: A `keras.random.SeedGenerator`, an int, or `None` (see `gumbel_noise`). Defaults to `None`.
        axis: Category axis. Defaults to `-1`.

    Returns:
        A one-hot tensor of `logits`' shape and dtype (a slice of `NaN` where the logits hold a `NaN`).

    Examples:
        >>> import numpy as np
        >>> logits = np.array([[0.0, 100.0, 0.0]], "float32")  # category 1 has probability ~1
        >>> np.asarray(gumbel_max(logits, seed=0)).tolist()
        [[0.0, 1.0, 0.0]]

    References:
        Maddison, Tarlow & Minka, "A* Sampling", 2014, arXiv:1411.0030 (the Gumbel-max trick).
    """
    logits = ops.convert_to_tensor(logits)
    return one_hot_argmax(logits + gumbel_noise(ops.shape(logits), seed, logits.dtype), axis=axis)


def gumbel_softmax(logits, temperature, seed=None, axis=-1):
    r"""Gumbel-Softmax (Concrete) sample: a relaxed one-hot sample at temperature τ.

    $$ y = \operatorname{softmax}\!\left((\ell + G)/\tau\right), \qquad G_i \sim \text{Gumbel}(0, 1), $$

    distributed as RelaxedOneHotCategorical(τ, logits); as τ → 0 it becomes the one-hot `gumbel_max`
    sample drawn with the same noise. Its gradient w.r.t. the logits is that of `tempered_softmax` at
    $\ell + G$ (the reparameterization gradient).

    Args:
        logits: Floating-point tensor of unnormalised log-probabilities.
        temperature: τ > 0, a float or scalar tensor (a number <= 0, NaN or ±inf raises; a tensor τ is not read back, so an invalid one gives NaN outputs).
        seed: A `keras.random.SeedGenerator`, an int, or `None` (see `gumbel_noise`). Defaults to `None`.
        axis: Category axis. Defaults to `-1`.

    Returns:
        A tensor of `logits`' shape and dtype on the probability simplex along `axis`.

    Raises:
        ValueError: if `temperature` is a number that is not finite and > 0.

    Examples:
        >>> import numpy as np
        >>> logits = np.array([[0.0, 100.0, 0.0]], "float32")
        >>> y = gumbel_softmax(logits, temperature=0.5, seed=0)
        >>> np.round(np.asarray(y), 3).tolist()
        [[0.0, 1.0, 0.0]]

    References:
        Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax", 2017, arXiv:1611.01144.
        Maddison, Mnih & Teh, "The Concrete Distribution", 2017, arXiv:1611.00712.
    """
    logits = ops.convert_to_tensor(logits)
    _temperature.temperature(temperature, logits.dtype)  # refuse a bad τ before drawing noise
    noise = gumbel_noise(ops.shape(logits), seed, logits.dtype)
    return tempered_softmax(logits + noise, temperature, axis=axis)


def _check_k(k, n):
    k = _validation.check_int("k", k, 1)
    if n is not None and k > n:
        raise ValueError(f"`k` must be at most the size of the axis ({n}). Received: k={k}")
    return k


def top_k_mask(x, k, axis=-1):
    r"""k-hot mask of the `k` largest entries along `axis` (ties go to the lower index).

    $$ h(x)_i = [\,x_i \text{ is among the } k \text{ largest}\,]. $$

    Args:
        x: Floating-point tensor; the size of `axis` must be known.
        k: Number of entries to keep, an integer with 1 <= k <= size of `axis`.
        axis: Axis to select along. Defaults to `-1`.

    Returns:
        A tensor of `x`'s shape and dtype with exactly `k` ones per slice (a slice holding `NaN` gives
        a slice of `NaN`).

    Raises:
        ValueError: if `k` is not an integer >= 1 or exceeds the size of `axis`.

    Examples:
        >>> import numpy as np
        >>> np.asarray(top_k_mask(np.array([[0.3, -1.0, 2.0, 0.5]]), k=2)).tolist()
        [[0.0, 0.0, 1.0, 1.0]]
    """
    x = ops.convert_to_tensor(x)
    k = _check_k(k, x.shape[axis])
    xt = ops.moveaxis(x, axis, -1)
    _, idx = ops.top_k(xt, k, sorted=False)
    mask = ops.sum(ops.one_hot(idx, xt.shape[-1], dtype=x.dtype), axis=-2)
    return flag_nan_slices(x, ops.moveaxis(mask, -1, axis), axis)


def soft_top_k(x, k, temperature, axis=-1):
    r"""Soft k-hot mask: sigmoids around a threshold chosen so that each slice sums to `k`.

    $$
    \tilde h(x)_i = \sigma\!\left(\frac{x_i + \nu}{\tau}\right), \qquad
    \nu \text{ such that } \textstyle\sum_i \tilde h_i = k,
    $$

    the limited multi-label projection (LML) at temperature τ. ν is found by bisection (no gradient
    through the loop) and differentiated implicitly: with $s_i = \tilde h_i(1-\tilde h_i)/\tau$,

    $$ \frac{\partial \tilde h_i}{\partial x_j} = s_i\left(\delta_{ij} - \frac{s_j}{\sum_l s_l}\right), $$

    so gradients stay finite at small τ and sum to zero across a slice (the mask's sum is fixed).
    Entries lie in (0, 1); as τ → 0 the mask tends to `top_k_mask` (away from ties at the k-th value).
    With `k` equal to the axis size the mask is all ones.

    Args:
        x: Floating-point tensor; the size of `axis` must be known.
        k: Number of entries to keep, an integer with 1 <= k <= size of `axis`.
        temperature: τ > 0, in the units of `x`, a float or scalar tensor (a number <= 0, NaN or ±inf raises; a tensor τ is not read back, so an invalid one gives NaN outputs).
        axis: Axis to select along. Defaults to `-1`.

    Returns:
        A tensor of `x`'s shape and dtype whose slices along `axis` sum to `k` (to the bisection's
        precision, 40 halvings of a bracket 60 τ wider than the slice's range).

    Raises:
        ValueError: if `k` is not an integer >= 1 or exceeds the size of `axis`.
        ValueError: if `temperature` is a number that is not finite and > 0.

    Examples:
        >>> import numpy as np
        >>> m = soft_top_k(np.array([[0.3, -1.0, 2.0, 0.5]]), k=2, temperature=0.05)
        >>> np.round(np.asarray(m), 2).tolist()
        [[0.12, 0.0, 1.0, 0.88]]

    References:
        Amos, Koltun & Kolter, "The Limited Multi-Label Projection Layer", 2019, arXiv:1905.04638.
    """
    x = ops.convert_to_tensor(x)
    n = x.shape[axis]
    k = _check_k(k, n)
    tau = _temperature.temperature(temperature, x.dtype)
    if k == n:
        return ops.ones_like(x)
    xt = ops.moveaxis(x, axis, -1)
    xs = ops.stop_gradient(xt)
    finite = ops.isfinite(xs)
    # Bracket the threshold with the finite entries only: -inf (a masked entry) gets 0 whatever ν is.
    # `initial` keeps an empty batch valid (eager TensorFlow refuses the max of an empty tensor).
    top = ops.max(ops.where(finite, xs, -float("inf")), axis=-1, keepdims=True, initial=-float("inf"))
    bottom = ops.min(ops.where(finite, xs, float("inf")), axis=-1, keepdims=True, initial=float("inf"))
    lo = -top - _BRACKET * tau
    hi = -bottom + _BRACKET * tau

    def step(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        too_many = ops.sum(ops.sigmoid((xs + mid) / tau), axis=-1, keepdims=True) > k
        return ops.where(too_many, lo, mid), ops.where(too_many, mid, hi)

    lo, hi = ops.fori_loop(0, _BISECTION_STEPS, step, (lo, hi))
    nu = ops.stop_gradient(0.5 * (lo + hi))
    y0 = ops.sigmoid((xs + nu) / tau)
    s = ops.stop_gradient(y0 * (1.0 - y0))  # τ cancels in s_j / Σ s
    total = ops.maximum(ops.sum(s, axis=-1, keepdims=True), 1e-30)
    # Zero in value, −Σ_j s_j dx_j / Σ s in gradient: the implicit derivative of ν.
    nu = nu - ops.sum(s * ops.where(finite, xt - xs, 0.0), axis=-1, keepdims=True) / total
    mask = ops.sigmoid((xt + nu) / tau)
    return ops.moveaxis(mask, -1, axis)
