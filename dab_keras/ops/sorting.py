"""Sorting: hard sort, argsort and permutation matrices, and the NeuralSort / SoftSort relaxations.

All functions here work along the last axis; layers move their `axis` there first. A permutation
matrix `P` of shape `(..., n, n)` sorts by `P @ x`: row `i` is one-hot at the index of the i-th element
of the sorted order. NaN policy of the hard ops: a slice holding a NaN gives NaN values (`sort`), a NaN
matrix (`permutation_matrix`) and indices of -1 (`argsort`), never a silently wrong order.
"""

from keras import ops

from dab_keras import _validation
from dab_keras.ops._nan import flag_nan_slices

DIRECTIONS = ("ascending", "descending")


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


def neural_sort(x, temperature, direction="descending"):
    r"""NeuralSort: a unimodal row-stochastic relaxation of the sorting permutation matrix.

    For descending order, with $A_{jk} = |x_j - x_k|$,

    $$ \hat P_{i,:} = \operatorname{softmax}\!\left(\frac{(n + 1 - 2i)\,x - A \mathbf 1}{\tau}\right),
    \qquad i = 1, \dots, n, $$

    which equals `tfp.math.soft_sorting_matrix(x, temperature)`; ascending order applies the same
    formula to $-x$. As τ → 0 it tends to `permutation_matrix` (for distinct entries).

    Args:
        x: Floating-point tensor of shape `(..., n)`, `n` known.
        temperature: τ > 0, a float or scalar tensor.
        direction: `"ascending"` or `"descending"`. Defaults to `"descending"` (the paper's).

    Returns:
        A tensor of shape `(..., n, n)` and `x`'s dtype whose rows are positive and sum to 1 (row i: a
        soft one-hot of the index holding the i-th value).

    Raises:
        ValueError: for another `direction`.

    Examples:
        >>> import numpy as np
        >>> p = neural_sort(np.array([0.5, -1.0, 2.0]), temperature=0.01)
        >>> np.round(np.asarray(p), 3).tolist()
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]

    References:
        Grover, Wang, Zweig & Ermon, "Stochastic Optimization of Sorting Networks via Continuous
        Relaxations", 2019, arXiv:1903.08850.
    """
    _check_direction(direction)
    s = _oriented(ops.convert_to_tensor(x), direction)
    n = s.shape[-1]
    tau = ops.cast(temperature, s.dtype)
    row_sums = ops.sum(ops.abs(ops.expand_dims(s, -1) - ops.expand_dims(s, -2)), axis=-1)  # A 1
    scaling = ops.cast(n + 1 - 2 * ops.arange(1, n + 1), s.dtype)  # (n,)
    logits = ops.expand_dims(s, -2) * ops.expand_dims(scaling, -1) - ops.expand_dims(row_sums, -2)
    return ops.softmax(logits / tau, axis=-1)


def soft_sort(x, temperature, direction="descending"):
    r"""SoftSort: softmax of negative distances between sorted and unsorted values.

    $$ \hat P_{ij} = \operatorname{softmax}_j\!\left(-\frac{|x_{(i)} - x_j|}{\tau}\right), $$

    with $x_{(i)}$ the i-th value of $x$ sorted in `direction` (differentiated through, as in the
    paper's code). As τ → 0 it tends to `permutation_matrix` (for distinct entries).

    Args:
        x: Floating-point tensor of shape `(..., n)`.
        temperature: τ > 0, a float or scalar tensor.
        direction: `"ascending"` or `"descending"`. Defaults to `"descending"` (the paper's).

    Returns:
        A tensor of shape `(..., n, n)` and `x`'s dtype whose rows are positive and sum to 1.

    Raises:
        ValueError: for another `direction`.

    Examples:
        >>> import numpy as np
        >>> p = soft_sort(np.array([0.5, -1.0, 2.0]), temperature=0.01, direction="ascending")
        >>> np.round(np.asarray(p), 3).tolist()
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]

    References:
        Prillo & Eisenschlos, "SoftSort: A Continuous Relaxation for the argsort Operator", 2020,
        arXiv:2006.16038.
    """
    x = ops.convert_to_tensor(x)
    tau = ops.cast(temperature, x.dtype)
    sorted_x = sort(x, direction)
    distances = ops.abs(ops.expand_dims(sorted_x, -1) - ops.expand_dims(x, -2))
    return ops.softmax(-distances / tau, axis=-1)
