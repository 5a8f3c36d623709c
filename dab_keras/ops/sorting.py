"""Sorting and ranking: hard sort, argsort, ranks and permutation matrices, and their relaxations.

All functions here work along the last axis; layers move their `axis` there first. Every function
defaults to ascending order, like `keras.ops.sort`. A permutation matrix `P` of shape `(..., n, n)`
sorts by `P @ x`: row `i` is one-hot at the index of the i-th element of the sorted order. NaN policy of
the hard ops: a slice holding a NaN gives NaN values (`sort`, `rank`), a NaN matrix
(`permutation_matrix`) and indices of -1 (`argsort`), never a silently wrong order.

The relaxations (`neural_sort`, `soft_sort`: the `(n, n)` matrix; `soft_sort_values`, `soft_rank`: its
products with the values and the positions, computed in row blocks without the matrix) share one
normalisation: the input is divided by its largest magnitude $c$ and τ by the same $c$, which leaves
the result unchanged and keeps every intermediate finite up to the dtype's largest value.
"""

from keras import ops

from dab_keras import _validation
from dab_keras.ops import _blocked, _scale, _temperature
from dab_keras.ops._nan import flag_nan_slices

DIRECTIONS = ("ascending", "descending")
RELAXATIONS = _blocked.KINDS
TIES = ("average", "min", "max", "ordinal")


def _check_direction(direction):
    return _validation.check_one_of("direction", direction, DIRECTIONS)


def _oriented(x, direction):
    """Maps `x` so that sorting the result descending sorts `x` in `direction`."""
    return x if direction == "descending" else -x


def argsort(x, direction="ascending"):
    """Indices that sort `x` along the last axis (a stable sort).

    `x[..., argsort(x)[..., i]]` is the i-th value in `direction`; equal values keep their input order
    (in both directions).

    Args:
        x: Floating-point tensor of shape `(..., n)`.
        direction: `"ascending"` or `"descending"`. Defaults to `"ascending"`.

    Returns:
        An int32 tensor of shape `(..., n)`; -1 throughout a slice that holds a NaN.

    Raises:
        ValueError: for another `direction`.

    Examples:
        >>> import numpy as np
        >>> np.asarray(argsort(np.array([0.3, -1.0, 2.0]))).tolist()
        [1, 0, 2]
    """
    _check_direction(direction)
    x = ops.convert_to_tensor(x)
    key = x if direction == "ascending" else -x
    return flag_nan_slices(x, ops.cast(ops.argsort(key, axis=-1), "int32"), fill=-1)


def permutation_matrix(x, direction="ascending"):
    r"""The hard permutation matrix that sorts `x` along the last axis.

    $$ P_{ij} = [\,j = \operatorname{argsort}(x)_i\,], \qquad (P x)_i = x_{(i)}. $$

    Args:
        x: Floating-point tensor of shape `(..., n)`, `n` known.
        direction: `"ascending"` or `"descending"`. Defaults to `"ascending"`.

    Returns:
        A tensor of shape `(..., n, n)` and `x`'s dtype; rows and columns are one-hot (a slice of `x`
        holding a NaN gives a matrix of NaN).

    Raises:
        ValueError: for another `direction`.

    Examples:
        >>> import numpy as np
        >>> np.asarray(permutation_matrix(np.array([0.3, -1.0, 2.0]))).tolist()
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    x = ops.convert_to_tensor(x)
    matrix = ops.one_hot(argsort(x, direction), x.shape[-1], dtype=x.dtype)
    # x as a column (..., n, 1): its NaN flag over axis -2 broadcasts over the whole (n, n) matrix.
    return flag_nan_slices(ops.expand_dims(x, -1), matrix, axis=-2)


def sort(x, direction="ascending"):
    """Sorted values along the last axis.

    Args:
        x: Floating-point tensor of shape `(..., n)`.
        direction: `"ascending"` or `"descending"`. Defaults to `"ascending"`.

    Returns:
        A tensor of `x`'s shape and dtype, sorted along the last axis (NaN throughout a slice that holds
        a NaN).

    Raises:
        ValueError: for another `direction`.

    Examples:
        >>> import numpy as np
        >>> np.asarray(sort(np.array([[0.5, -1.0, 2.0]]), direction="descending")).tolist()
        [[2.0, 0.5, -1.0]]
    """
    _check_direction(direction)
    x = ops.convert_to_tensor(x)
    out = ops.sort(x, axis=-1)
    out = out if direction == "ascending" else ops.flip(out, axis=-1)
    return flag_nan_slices(x, out)


def rank(x, direction="ascending", ties="average"):
    """1-based ranks along the last axis, as `scipy.stats.rankdata(x, method=ties)`.

    Rank 1 goes to the first value in `direction`: the smallest for `"ascending"` (as `rankdata`), the
    largest for `"descending"` (`rankdata(-x)`). Tied values get, by `ties`: the mean of the positions
    they span (`"average"`, the default and the ranks Spearman's correlation uses), the lowest
    (`"min"`), the highest (`"max"`), or distinct ranks in input order (`"ordinal"`). O(n log n).

    Args:
        x: Floating-point tensor of shape `(..., n)`.
        direction: `"ascending"` or `"descending"`. Defaults to `"ascending"`.
        ties: `"average"`, `"min"`, `"max"` or `"ordinal"`. Defaults to `"average"`.

    Returns:
        A tensor of `x`'s shape and dtype holding ranks in [1, n] (NaN throughout a slice that holds a
        NaN).

    Raises:
        ValueError: for another `direction` or `ties`.

    Examples:
        >>> import numpy as np
        >>> np.asarray(rank(np.array([0.5, -1.0, 2.0, 0.5]))).tolist()
        [2.5, 1.0, 4.0, 2.5]
        >>> np.asarray(rank(np.array([0.5, -1.0, 2.0, 0.5]), "descending", ties="min")).tolist()
        [2.0, 4.0, 1.0, 2.0]
    """
    _check_direction(direction)
    _validation.check_one_of("ties", ties, TIES)
    x = ops.convert_to_tensor(x)
    n = x.shape[-1]
    key = ops.stop_gradient(x if direction == "ascending" else -x)
    order = ops.cast(ops.argsort(key, axis=-1), "int32")  # stable: ties keep input order
    inverse = ops.argsort(order, axis=-1)
    position = ops.broadcast_to(ops.arange(n, dtype="int32"), ops.shape(order))
    if ties == "ordinal":
        ranks = position
    else:
        u = ops.take_along_axis(key, order, axis=-1)
        change = ops.not_equal(u[..., 1:], u[..., :-1])
        edge = ops.ones_like(u[..., :1], dtype="bool")
        first = ops.concatenate([edge, change], axis=-1)
        last = ops.concatenate([change, edge], axis=-1)
        # Start and end of each run of equal values, in sorted order: running maxima.
        start = _running_max(ops.where(first, position, 0))
        end = (n - 1) - ops.flip(_running_max(ops.flip(ops.where(last, (n - 1) - position, 0), -1)), -1)
        ranks = {"min": start, "max": end}.get(ties)
        if ranks is None:
            ranks = ops.cast(start + end, x.dtype) / 2.0
    ranks = ops.take_along_axis(ops.cast(ranks, x.dtype), ops.cast(inverse, "int32"), axis=-1) + 1.0
    return flag_nan_slices(x, ranks)


def _running_max(t):
    """Running maximum of a non-negative int tensor along the last axis, in log2(n) doubling steps.

    (`keras.ops.associative_scan` does the same but fails under TensorFlow's XLA.)
    """
    n = t.shape[-1]
    step = 1
    while step < n:
        shifted = ops.pad(t[..., :-step], [(0, 0)] * (len(t.shape) - 1) + [(step, 0)])
        t = ops.maximum(t, shifted)
        step *= 2
    return t


def _check_relaxation(relaxation):
    return _validation.check_one_of("relaxation", relaxation, RELAXATIONS)


def _abs_row_sums(s, order):
    """$(A_s \\mathbf 1)_j = \\sum_k |s_j - s_k|$ in O(n log n), from the sorted values' prefix sums.

    `order` (batch, n) sorts `s` descending; the sums are taken in ascending order.
    """
    n = s.shape[-1]
    order = ops.flip(order, axis=-1)
    u = ops.take_along_axis(s, order, axis=-1)
    p = ops.cast(ops.arange(n), s.dtype)
    below = ops.cumsum(u, axis=-1)  # Σ_{q <= p} u_q
    total = below[..., -1:]
    sorted_sums = u * p - (below - u) + (total - below) - u * (n - 1 - p)
    return ops.take_along_axis(sorted_sums, _blocked.inverse_permutation(order), axis=-1)


def _relaxation_inputs(x, temperature, direction, relaxation):
    """Checks the arguments; returns `(kind, x, tau, shape)`, `x` flattened to (batch, n), τ a tensor."""
    _check_direction(direction)
    kind = _check_relaxation(relaxation)
    x = ops.convert_to_tensor(x)
    tau = _temperature.temperature(temperature, x.dtype)
    n = x.shape[-1]
    if n is None:
        raise ValueError(f"Relaxed sorting needs a known size along the last axis. Received: x.shape={x.shape}")
    shape = tuple(-1 if d is None else d for d in x.shape)  # at most one unknown (the batch) axis
    return kind, ops.reshape(x, (-1, n)), tau, shape


def _descending_order(x, direction):
    """int32 indices that sort `_oriented(x, direction)` descending (`x` in `direction`), no gradient.

    Kept out of the XLA-compiled preparation: XLA's sort runs ~2.5x slower than TensorFlow's on CPUs.
    Dividing by the scale `c > 0` keeps the weak order, so this order also sorts `s / c` descending.
    """
    key = ops.stop_gradient(x if direction == "ascending" else -x)
    return ops.cast(ops.argsort(key, axis=-1), "int32")


def _prepare(kind, direction, x, tau, order):
    """Returns `(rows, s, a, c)` for `_blocked` or the matrix, from `x` (batch, n), τ and `_descending_order`.

    `s` is `x` oriented (descending order of `s` is `direction` order of `x`), divided by `c`, the power
    of two at or below its largest magnitude, and multiplied by `β = c / τ` (capped so that no logit
    overflows): the logits are those of `x / τ`, but no intermediate exceeds about `4 n c / τ`, whatever
    the input's scale. `rows` is NeuralSort's row coefficients `n + 1 - 2i` or SoftSort's `y`, the
    descending sort of `s` (with gradient); `a` is NeuralSort's `β A 1` (zeros for SoftSort).
    """
    n = x.shape[-1]
    s = _oriented(x, direction)
    c = _scale.power_of_two_scale(ops.max(ops.abs(s), axis=-1, keepdims=True, initial=0.0))
    cap = _temperature.largest_finite(x.dtype) / (32.0 * (n + 1))
    beta = ops.minimum(c / tau, cap)
    # s / c in value with an identity gradient: `_times_beta` applies β / c in one factor, since β and
    # 1 / c apart can overflow and underflow (c = 3e38, τ = 1).
    unit = ops.stop_gradient(s / c) + (s - ops.stop_gradient(s))
    k = ops.stop_gradient(beta / c)
    s = _times_beta(unit, beta, k)
    if kind == "neuralsort":
        a = _times_beta(_abs_row_sums(unit, order), beta, k)
        rows = ops.broadcast_to(ops.cast(n + 1 - 2 * ops.arange(1, n + 1), s.dtype), ops.shape(s))
    else:
        rows = ops.take_along_axis(s, order, axis=-1)  # differentiated through, as in the paper's code
        a = ops.zeros_like(s)
    return rows, s, a, c


def _times_beta(u, beta, k):
    """`u · β` in value; gradient `g · k` to `u` (k = β / c) and `Σ g · u` to β."""
    return ops.stop_gradient(u * beta) + (u - ops.stop_gradient(u)) * k + ops.stop_gradient(u) * (
        beta - ops.stop_gradient(beta)
    )


def _matrix(x, temperature, direction, relaxation):
    kind, x, tau, shape = _relaxation_inputs(x, temperature, direction, relaxation)
    rows, s, a, _ = _prepare(kind, direction, x, tau, _descending_order(x, direction))
    if kind == "neuralsort":
        logits = ops.expand_dims(rows, -1) * ops.expand_dims(s, -2) - ops.expand_dims(a, -2)
    else:
        logits = -ops.abs(ops.expand_dims(rows, -1) - ops.expand_dims(s, -2))
    return ops.reshape(ops.softmax(logits, axis=-1), shape + (shape[-1],))


def neural_sort(x, temperature, direction="ascending"):
    r"""NeuralSort: a unimodal row-stochastic relaxation of the sorting permutation matrix.

    For descending order, with $A_{jk} = |x_j - x_k|$,

    $$ \hat P_{i,:} = \operatorname{softmax}\!\left(\frac{(n + 1 - 2i)\,x - A \mathbf 1}{\tau}\right),
    \qquad i = 1, \dots, n, $$

    which equals `tfp.math.soft_sorting_matrix(x, temperature)`; ascending order applies the same
    formula to $-x$. As τ → 0 it tends to `permutation_matrix` (for distinct entries). The matrix has
    $n^2$ entries per slice by nature; for the sorted values or the ranks alone use `soft_sort_values`
    or `soft_rank`, which never build it. $A\mathbf 1$ is computed in O(n log n) from sorted prefix sums.

    Args:
        x: Floating-point tensor of shape `(..., n)`, `n` known.
        temperature: τ > 0, a float or scalar tensor (a number <= 0, NaN or ±inf raises; a tensor τ is
            not read back, so an invalid one gives NaN outputs).
        direction: `"ascending"` or `"descending"`. Defaults to `"ascending"` (the paper's is
            descending).

    Returns:
        A tensor of shape `(..., n, n)` and `x`'s dtype whose rows are positive and sum to 1 (row i: a
        soft one-hot of the index holding the i-th value).

    Raises:
        ValueError: for another `direction`, or a number `temperature` that is not finite and > 0.

    Examples:
        >>> import numpy as np
        >>> p = neural_sort(np.array([0.5, -1.0, 2.0]), temperature=0.01)
        >>> np.round(np.asarray(p), 3).tolist()
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]

    References:
        Grover, Wang, Zweig & Ermon, "Stochastic Optimization of Sorting Networks via Continuous
        Relaxations", 2019, arXiv:1903.08850.
    """
    return _matrix(x, temperature, direction, "neuralsort")


def soft_sort(x, temperature, direction="ascending"):
    r"""SoftSort: softmax of negative distances between sorted and unsorted values.

    $$ \hat P_{ij} = \operatorname{softmax}_j\!\left(-\frac{|x_{(i)} - x_j|}{\tau}\right), $$

    with $x_{(i)}$ the i-th value of $x$ sorted in `direction` (differentiated through, as in the
    paper's code). As τ → 0 it tends to `permutation_matrix` (for distinct entries). The matrix has
    $n^2$ entries per slice; `soft_sort_values` and `soft_rank` with `relaxation="softsort"` avoid it.

    Args:
        x: Floating-point tensor of shape `(..., n)`.
        temperature: τ > 0, a float or scalar tensor (a number <= 0, NaN or ±inf raises; a tensor τ is
            not read back, so an invalid one gives NaN outputs).
        direction: `"ascending"` or `"descending"`. Defaults to `"ascending"`.

    Returns:
        A tensor of shape `(..., n, n)` and `x`'s dtype whose rows are positive and sum to 1.

    Raises:
        ValueError: for another `direction`, or a number `temperature` that is not finite and > 0.

    Examples:
        >>> import numpy as np
        >>> p = soft_sort(np.array([0.5, -1.0, 2.0]), temperature=0.01)
        >>> np.round(np.asarray(p), 3).tolist()
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]

    References:
        Prillo & Eisenschlos, "SoftSort: A Continuous Relaxation for the argsort Operator", 2020,
        arXiv:2006.16038.
    """
    return _matrix(x, temperature, direction, "softsort")


def _blocked_inputs(kind, direction, mode, x, tau, order):
    """`_prepare`'s tensors for `_blocked.soft_permute`: `(rows, s, a, values, c, peaks, inverse)`.

    `values` is `x / c` with an identity gradient to `x` (ranks: zeros), since `P̂ x = c P̂ (x / c)` keeps
    every intermediate bounded; `peaks` and `inverse` are `_blocked.peak_columns` of the descending order.
    """
    rows, s, a, c = _prepare(kind, direction, x, tau, order)
    if mode == "values":
        values = ops.stop_gradient(x / c) + (x - ops.stop_gradient(x))
    else:
        values = ops.zeros_like(s)
    return (rows, s, a, values, c) + _blocked.peak_columns(order, s.dtype)


def _blocked_product(x, temperature, direction, relaxation, block_size, mode):
    block_size = _validation.check_int("block_size", block_size, 1)
    kind, x, tau, shape = _relaxation_inputs(x, temperature, direction, relaxation)
    order = _descending_order(x, direction)
    # The preparation is not compiled on its own: differentiated inside an enclosing `jit_compile=True`
    # step, a nested XLA function's gradient made the step's inputs compile-time constants (a new
    # compilation for every batch); plain ops are fused into the enclosing cluster instead.
    inputs = _blocked_inputs(kind, direction, mode, x, tau, order)
    return ops.reshape(_blocked.soft_permute(kind, *inputs, mode=mode, block_size=block_size), shape)


def soft_sort_values(x, temperature, direction="ascending", relaxation="neuralsort",
                     block_size=_blocked.DEFAULT_BLOCK_SIZE):
    r"""Relaxed sorted values $\hat P x$, computed in row blocks without the $(n, n)$ matrix.

    $$ \tilde x_{(i)} = \sum_j \hat P_{ij}\, x_j, $$

    with $\hat P$ from `neural_sort` or `soft_sort` (`relaxation`). The rows of $\hat P$ are computed
    `block_size` at a time, forward and again (instead of stored) in a custom backward pass, so memory is
    O(batch · block_size · n) and the gradient equals the dense one's. As τ → 0 it tends to `sort`.

    Args:
        x: Floating-point tensor of shape `(..., n)`, `n` known.
        temperature: τ > 0, a float or scalar tensor (a number <= 0, NaN or ±inf raises; a tensor τ is
            not read back, so an invalid one gives NaN outputs). Gradients reach a tensor τ.
        direction: `"ascending"` or `"descending"`. Defaults to `"ascending"`.
        relaxation: `"neuralsort"` or `"softsort"`. Defaults to `"neuralsort"`.
        block_size: Rows of $\hat P$ per block, an integer >= 1. Defaults to `64`.

    Returns:
        A tensor of `x`'s shape and dtype: convex combinations of the entries, in `direction` order.

    Raises:
        ValueError: for an invalid `direction`, `relaxation` or `block_size`, or a number `temperature`
            that is not finite and > 0.

    Examples:
        >>> import numpy as np
        >>> y = soft_sort_values(np.array([0.5, -1.0, 2.0]), temperature=0.01)
        >>> np.round(np.asarray(y), 3).tolist()
        [-1.0, 0.5, 2.0]

    References:
        Grover, Wang, Zweig & Ermon, "Stochastic Optimization of Sorting Networks via Continuous
        Relaxations", 2019, arXiv:1903.08850.
        Prillo & Eisenschlos, "SoftSort: A Continuous Relaxation for the argsort Operator", 2020,
        arXiv:2006.16038.
    """
    return _blocked_product(x, temperature, direction, relaxation, block_size, "values")


def soft_rank(x, temperature, direction="ascending", relaxation="neuralsort",
              block_size=_blocked.DEFAULT_BLOCK_SIZE):
    r"""Relaxed 1-based ranks $\hat P^\top (1, \dots, n)$, in row blocks without the $(n, n)$ matrix.

    $$ \tilde\rho_j = \sum_i i\, \hat P_{ij}, $$

    the expected position of entry $j$ under the relaxed permutation $\hat P$ (`neural_sort` or
    `soft_sort`). As τ → 0 it tends to `rank(x, direction)`, tied entries to their average rank (the
    rows of tied positions split evenly between them). Computed and differentiated block by block like
    `soft_sort_values`.

    Args:
        x: Floating-point tensor of shape `(..., n)`, `n` known.
        temperature: τ > 0, in the units of `x`: a float or scalar tensor (a number <= 0, NaN or ±inf
            raises; a tensor τ is not read back, so an invalid one gives NaN outputs).
        direction: `"ascending"` (rank 1 for the smallest) or `"descending"`. Defaults to
            `"ascending"`.
        relaxation: `"neuralsort"` or `"softsort"`. Defaults to `"neuralsort"`.
        block_size: Rows of $\hat P$ per block, an integer >= 1. Defaults to `64`.

    Returns:
        A tensor of `x`'s shape and dtype (soft ranks; each slice sums to about n(n+1)/2).

    Raises:
        ValueError: for an invalid `direction`, `relaxation` or `block_size`, or a number `temperature`
            that is not finite and > 0.

    Examples:
        >>> import numpy as np
        >>> r = soft_rank(np.array([0.5, -1.0, 2.0, 0.5]), temperature=0.01)
        >>> np.round(np.asarray(r), 3).tolist()
        [2.5, 1.0, 4.0, 2.5]

    References:
        Grover, Wang, Zweig & Ermon, "Stochastic Optimization of Sorting Networks via Continuous
        Relaxations", 2019, arXiv:1903.08850.
        Blondel, Teboul, Berthet & Djolonga, "Fast Differentiable Sorting and Ranking", 2020,
        arXiv:2002.08871 (soft ranks by another route).
    """
    return _blocked_product(x, temperature, direction, relaxation, block_size, "ranks")
