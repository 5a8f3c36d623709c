r"""Row-blocked relaxed permutations: $\hat P x$ and $\hat P^\top w$ without the $(n, n)$ matrix.

NeuralSort and SoftSort both give a relaxed permutation matrix whose rows are softmaxes of logits

$$ L_{ij} = \begin{cases} Z_{ij} - Z_{i\sigma(i)},\ Z_{ij} = r_i s_j - a_j & \text{NeuralSort: }
   r_i = n + 1 - 2i,\ a = A_s \mathbf 1 \\ -|y_i - s_j| & \text{SoftSort: } y = \operatorname{sort}(s)
   \end{cases} $$

where $s$ (and $a$, $y$) already carry the inverse temperature (the callers pass $\beta s$ with
$\beta = c/\tau$ and $|s| < 4$ before scaling) and $\sigma(i)$ is the column of the i-th largest $s$,
where row $i$ peaks (NeuralSort's theorem: $Z_{i\sigma(i)} = \max_k Z_{ik}$). Every $L_{ij} \le 0$
(NeuralSort's rounded logits are clamped at 0) and each row has an exact 0, so $E = e^L$ neither
overflows nor vanishes. Both kernels work with the columns in sorted order and visit, block by block,
only a band of columns: NeuralSort's skips the columns whose entries underflow (see
`_neuralsort_kernels`); SoftSort's sums the columns beyond the block's tied values as exact rank-one
tiles (see `_softsort_kernels`).

The functions compute the values $v = \hat P x$ and the ranks $\rho = \hat P^\top w$ ($w_i = i$) one
block of rows at a time, under a custom gradient that recomputes each block in the backward pass: memory
is $O(\text{batch} \cdot \text{block} \cdot n)$. With $d_i = \sum_j E_{ij}$ (kept from the forward
pass), upstream gradient $g$ and $\bar L = \partial \mathcal L / \partial L$:

- values: $\bar x_j = \sum_i (g_i / d_i) E_{ij}$ and $\bar L_{ij} = (g_i / d_i) E_{ij} (x_j - v_i)$;
- ranks: $\bar L_{ij} = (w_i / d_i) E_{ij} (g_j - t_i)$, $t_i = \sum_k E_{ik} g_k / d_i$;

then NeuralSort's $\bar s_j = \sum_i r_i \bar L_{ij}$, $\bar a_j = -\sum_i \bar L_{ij}$ are sums over rows
of $E$ weighted by row vectors, i.e. one small matrix product per block ($\bar L$ is never formed), and
SoftSort's $\bar s_j = \sum_i \bar L_{ij} \operatorname{sign}(y_i - s_j) = $ minus the row sums
$\bar y_i$ summed the other way. The peaks need no gradient (each row of $\bar L$ sums to 0).
Written around the column $\sigma(i)$ where row $i$ peaks ($x_j - v_i = (x_j - x_{\sigma(i)}) +
(x_{\sigma(i)} - v_i)$), a one-hot row cancels exactly.
"""

import functools
import math

import keras
from keras import ops

KINDS = ("neuralsort", "softsort")
DEFAULT_BLOCK_SIZE = 64
CHUNK_SIZE = 128  # NeuralSort's columns per step within a block's band


def inverse_permutation(order):
    """`inverse[..., order[..., k]] = k` for int32 `order` (batch, n), by a scatter (a second sort costs more)."""
    n = order.shape[-1]
    shape = ops.shape(order)
    batch = ops.broadcast_to(ops.expand_dims(ops.arange(shape[0], dtype="int32"), -1), shape)
    indices = ops.reshape(ops.stack([batch, order], axis=-1), (-1, 2))
    positions = ops.reshape(ops.broadcast_to(ops.arange(n, dtype="int32"), shape), (-1,))
    return ops.scatter(indices, positions, shape)


def _row_padding(n, block):
    """`(blocks, pad, width, padded, zero_padded)` for `n` rows in blocks of `block`.

    `width = blocks · block = n + pad`; `padded(t)` extends (batch, n, ...) to `width` rows by repeating
    the last row (a real row keeps every softmax finite; its weight and gradient are 0) and
    `zero_padded(t)` extends (batch, n) with zeros.
    """
    blocks = -(-n // block)
    pad = blocks * block - n

    def padded(t):
        return ops.concatenate([t, ops.repeat(t[:, -1:], pad, axis=1)], axis=1) if pad else t

    def zero_padded(t):
        return ops.pad(t, ((0, 0), (0, pad))) if pad else t

    return blocks, pad, blocks * block, padded, zero_padded


def _rank_weights(n, s):
    """The ranks' weights $w_i = i$ (1-based positions, i = 1..n), shaped and typed like `s` (batch, n)."""
    return ops.broadcast_to(ops.cast(ops.arange(1, n + 1), s.dtype), ops.shape(s))


def _window(t, axis, start, size):
    """`size` entries of `t` along `axis` from `start` (a Python int or a traced int32 scalar).

    Only inside the kernels, which are always XLA-compiled (TensorFlow: `_compiled_kernels`; JAX: the
    caller's `jax.jit`). On TensorFlow an XLA dynamic slice: `tf.slice` would make XLA take `begin` as a
    compile-time constant, so every new band start (and every kernel input it is computed from) would
    join the compilation key and the kernels would recompile on every new batch. JAX: `ops.slice` is
    `lax.dynamic_slice`.
    """
    axis = axis % len(t.shape)
    if keras.backend.backend() == "tensorflow":
        from tensorflow.compiler.tf2xla.python import xla

        starts = ops.stack([ops.cast(start, "int32") if i == axis else 0 for i in range(len(t.shape))])
        # An unknown (batch) size is read from the shape: a constant once XLA compiles for the shape.
        sizes = ops.stack([size if i == axis else d if d is not None else ops.shape(t)[i]
                           for i, d in enumerate(t.shape)])
        return xla.dynamic_slice(t, starts, sizes)
    begin = tuple(start if i == axis else 0 for i in range(len(t.shape)))
    shape = tuple(size if i == axis else ops.shape(t)[i] for i in range(len(t.shape)))
    return ops.slice(t, begin, shape)


def _rows(t, start, size):
    """Rows `[start, start + size)` of the second axis of `t` (batch, n_padded, ...)."""
    return _window(t, 1, start, size)


def _columns(t, start, size):
    """Columns `[start, start + size)` of the second axis of `t` (batch, n_padded, ...)."""
    return _window(t, 1, start, size)


def _add_columns(acc, start, update):
    """`acc` (batch, K, width) or (batch, width) with `update` added to the columns from `start`."""
    begin = (0,) * (len(acc.shape) - 1) + (start,)
    return ops.slice_update(acc, begin, _window(acc, -1, start, update.shape[-1]) + update)


def _matvec(e, v):
    """`e @ v` for e (batch, B, n) and v (batch, n): (batch, B)."""
    return ops.squeeze(ops.matmul(e, ops.expand_dims(v, -1)), -1)


def _weighted_rows(weights, e):
    """`weights @ e` for weights (batch, K, B) and e (batch, B, n): K weighted sums of e's rows."""
    return ops.matmul(weights, e)


def _neuralsort_logits(rows, peak_s, peak_a, s, a):
    r"""$L_{ij} = r_i (s_j - s_{\sigma(i)}) - (a_j - a_{\sigma(i)})$ for rows (batch, R) and columns (batch, C)."""
    return ops.expand_dims(rows, -1) * (ops.expand_dims(s, -2) - ops.expand_dims(peak_s, -1)) - (
        ops.expand_dims(a, -2) - ops.expand_dims(peak_a, -1)
    )


def _band_threshold(n, dtype):
    r"""T such that the entries below $e^{-T}$ of a NeuralSort row weigh less than a thousandth of a rounding.

    A row's logits peak at exactly 0 (its largest entry is $e^0 = 1$, so its sum is at least 1), so the
    at most n entries below $e^{-T}$ sum to less than $n e^{-T}$. With $T = \ln(2n/\varepsilon) +
    \ln 1000$ ($\varepsilon$ the dtype's machine epsilon) that is below $\varepsilon / 2000$ of the row
    sum, a thousandth of the rounding error of one floating-point addition to it: leaving them out changes
    no output beyond the dense computation's own rounding (relative to the largest |x|). Capped where
    $e^{-T}$ underflows the dtype's smallest normal number (T = 87.4 in float32, 708.4 in float64).
    For n = 1024: T = 30.5 in float32, 50.6 in float64.
    """
    eps, underflow = (2.220446049250313e-16, 708.4) if dtype == "float64" else (1.1920929e-07, 87.4)
    return min(underflow, math.log(2.0 * n / eps) + math.log(1000.0))


def _neuralsort_kernels(mode, n, block, chunk):
    r"""NeuralSort's kernels (as `_kernels`), with the columns in sorted order and each block's band only.

    With the columns sorted as the rows ($u = s_\sigma$, descending), $L_{ik} = -\sum_m (u_m - u_{m+1})
    (2|m - i| \pm 1)$ over the gaps between positions $i$ and $k$: it falls monotonically away from the
    diagonal, and row $i$'s band of entries above $-T$ (T: `_band_threshold`, where an entry falls below a
    thousandth of the row sum's rounding) moves
    right with $i$. A block's band is therefore the union of its first row's and its last row's, found
    from those two rows; the kernels visit it in chunks of `chunk` columns and skip the rest.
    """
    blocks, pad, width, padded, zero_padded = _row_padding(n, block)

    def setup(s, a, r, perm, columns):
        """Sorted columns (padded by `chunk` columns that contribute nothing) and the rows' factors."""
        index = ops.cast(perm, "int32")
        s_sorted, a_sorted = (ops.take_along_axis(t, index, axis=-1) for t in (s, a))
        # Padding columns: a = +inf gives L = -inf there, so e^L = 0 (at most the dtype's smallest normal).
        col_pad = ((0, 0), (0, chunk))
        cols = (ops.pad(s_sorted, col_pad), ops.pad(a_sorted, col_pad, constant_values=float("inf")))
        cols += tuple(ops.pad(ops.take_along_axis(t, index, axis=-1), col_pad) for t in columns)
        rows = tuple(padded(t) for t in (r, s_sorted, a_sorted))
        threshold = _band_threshold(n, s.dtype)
        return index, s_sorted, a_sorted, rows, cols, threshold

    def band(start, rows, s_sorted, a_sorted, threshold):
        """The columns `[lo, hi)` (sorted order, over the batch) holding the block's entries above -T."""
        first = tuple(_rows(t, start, 1) for t in rows)
        last = tuple(_rows(t, start + block - 1, 1) for t in rows)
        position = ops.arange(n, dtype="int32")
        # (NaN logits, from an invalid τ, count as above: the NaN reaches every output.)
        above = ops.logical_not(_neuralsort_logits(*first, s_sorted, a_sorted)[:, 0] <= -threshold)
        lo = ops.min(ops.where(above, position, n), initial=n)  # (an empty batch: no chunk)
        above = ops.logical_not(_neuralsort_logits(*last, s_sorted, a_sorted)[:, 0] <= -threshold)
        hi = ops.max(ops.where(above, position + 1, 0), initial=0)
        return lo, (hi - lo + chunk - 1) // chunk

    def chunks(start, rows, cols, lo, count, body, init):
        """`body(column_start, e, carry)` over the band's chunks; `e` is (batch, block, chunk)."""
        block_rows = tuple(_rows(t, start, block) for t in rows)

        def step(k, carry):
            c0 = lo + k * chunk
            sc, ac = (_columns(t, c0, chunk) for t in cols[:2])
            e = ops.exp(ops.minimum(_neuralsort_logits(*block_rows, sc, ac), 0.0))
            return body(c0, e, carry)

        return ops.fori_loop(0, count, step, init)

    def forward(y, s, a, x, scale, r, perm, inverse):
        dtype = s.dtype
        batch = ops.shape(s)[0]
        index, s_sorted, a_sorted, rows, cols, threshold = setup(s, a, r, perm, (x,) if mode == "values" else ())
        weights = zero_padded(_rank_weights(n, s))

        def body(b, carry):
            out, den = carry
            start = b * block
            lo, count = band(start, rows, s_sorted, a_sorted, threshold)
            if mode == "values":
                # Two products of the same e (one matrix product with [x, 1] runs slower on CPUs).
                num, d = chunks(start, rows, cols, lo, count,
                                lambda c0, e, acc: (acc[0] + _matvec(e, _columns(cols[2], c0, chunk)),
                                                    acc[1] + ops.sum(e, axis=-1)),
                                (ops.zeros((batch, block), dtype),) * 2)
                out = ops.slice_update(out, (0, start), scale * (num / d))
            else:
                # Two passes over the band, the row sums d first (recomputing e is faster than keeping it).
                d = chunks(start, rows, cols, lo, count, lambda c0, e, acc: acc + ops.sum(e, axis=-1),
                           ops.zeros((batch, block), dtype))
                coef = ops.expand_dims(_rows(weights, start, block) / d, -2)

                def add(c0, e, acc):
                    return _add_columns(acc, c0, ops.squeeze(ops.matmul(coef, e), -2))

                out = chunks(start, rows, cols, lo, count, add, out)
            return out, ops.slice_update(den, (0, start), d)

        out_width = width if mode == "values" else n + chunk
        init = (ops.zeros((batch, out_width), dtype), ops.ones((batch, width), dtype))
        out, den = ops.fori_loop(0, blocks, body, init)
        if mode == "values":
            return out[:, :n], den
        # Column sums in sorted order back to the input's order.
        return ops.take_along_axis(out[:, :n], ops.cast(inverse, "int32"), axis=-1), den

    def backward(y, s, a, x, scale, r, perm, inverse, out, den, g):
        dtype = s.dtype
        batch = ops.shape(s)[0]
        colvals = x if mode == "values" else g
        index, s_sorted, a_sorted, rows, cols, threshold = setup(s, a, r, perm, (colvals,))
        # L̄ written around the peak column: x_j - v_i = (x_j - x_σ(i)) + δ_i, δ_i = x_σ(i) - v_i formed
        # directly, so a hard row cancels exactly (no β-amplified round-off when P̂ is one-hot).
        sorted_vals = padded(ops.take_along_axis(colvals, index, axis=-1))
        weights = zero_padded(_rank_weights(n, s))
        if mode == "values":
            alpha_all = zero_padded(g) / den  # (batch, n_pad)
            delta_all = sorted_vals - padded(out / scale)

        def body(b, acc):
            start = b * block
            lo, count = band(start, rows, s_sorted, a_sorted, threshold)
            rowvals = _rows(sorted_vals, start, block)
            if mode == "values":
                # L̄_ij = α_i E_ij (x_j - v_i), α = g / d.
                alpha, delta = _rows(alpha_all, start, block), _rows(delta_all, start, block)
            else:
                # L̄_ij = α_i E_ij (g_j - t_i), α = w / d, t_i = Σ_k P̂_ik g_k.
                d = _rows(den, start, block)
                alpha = _rows(weights, start, block) / d
                t = chunks(start, rows, cols, lo, count,
                           lambda c0, e, acc: acc + _matvec(e, _columns(cols[2], c0, chunk)),
                           ops.zeros((batch, block), dtype))
                delta = rowvals - t / d
            ra = _rows(rows[0], start, block) * alpha
            # (r α) x_σ rounds as x_j (r α) does, so a one-hot row cancels exactly in x_j M0 - M1.
            u = ops.stack([ra, ra * rowvals, ra * delta, alpha, alpha * rowvals, alpha * delta], axis=-2)

            def add(c0, e, acc):
                return _add_columns(acc, c0, _weighted_rows(u, e))

            return chunks(start, rows, cols, lo, count, add, acc)

        acc = ops.fori_loop(0, blocks, body, ops.zeros((batch, 6, n + chunk), dtype))
        return acc[:, :, :n]

    def finish(acc, x, g, perm, inverse):
        """`backward`'s column sums (sorted order) as `(dy, ds, da, dx)` in the input's order.

        Combined here, outside the compiled kernel, where no fused multiply-add rounds `x_j M0 - M1`
        differently from its two products (a one-hot row cancels exactly only with both products rounded).
        """
        index = ops.cast(perm, "int32")
        colvals = ops.take_along_axis(x if mode == "values" else g, index, axis=-1)
        ds = colvals * acc[:, 0] - acc[:, 1] + acc[:, 2]
        da = -(colvals * acc[:, 3] - acc[:, 4] + acc[:, 5])
        dx = acc[:, 3] if mode == "values" else ops.zeros_like(ds)
        ds, da, dx = (ops.take_along_axis(t, ops.cast(inverse, "int32"), axis=-1) for t in (ds, da, dx))
        return ops.zeros_like(ds), ds, da, dx

    return forward, backward, finish


def _softsort_kernels(mode, n, block, chunk):
    r"""SoftSort's kernels (as `_neuralsort_kernels`): a dense band and exact rank-one tiles elsewhere.

    In sorted coordinates ($u = s_\sigma$ descending, $y_i = u_i$) the entries are $E_{ik} = e^{-|u_i -
    u_k|}$. A block of rows $[b_0, b_1)$ is tied to the columns $[lo, hi)$ whose $u_k$ lies within the
    block's values; the kernels visit those in chunks of `chunk` columns (one chunk when there are no
    ties). Every other column is strictly beyond the whole block, where the entries factor exactly:
    right of the band ($u_k < y_{b_1 - 1} = p$) $E_{ik} = e^{-(y_i - p)}\, e^{-(p - u_k)}$, left of it
    ($u_k > y_{b_0} = q$) $E_{ik} = e^{-(q - y_i)}\, e^{-(u_k - q)}$, both factors at most 1 (no overflow;
    an underflowing factor means an underflowing entry), and $\operatorname{sign}(y_i - u_k) = \pm 1$
    there. The sums over those columns are then products of a row factor and a column factor: O(n) per
    block instead of O(block · n).
    """
    blocks, pad, width, padded, zero_padded = _row_padding(n, block)

    def setup(y, s, perm, columns):
        """Sorted columns (padded by `chunk` columns of u = -inf: e = 0) and the padded rows."""
        index = ops.cast(perm, "int32")
        u = ops.take_along_axis(s, index, axis=-1)
        col_pad = ((0, 0), (0, chunk))
        cols = (ops.pad(u, col_pad, constant_values=-float("inf")),)
        sorted_cols = tuple(ops.take_along_axis(t, index, axis=-1) for t in columns)
        cols += tuple(ops.pad(t, col_pad) for t in sorted_cols)
        # A NaN or an infinity in a slice makes every output of the slice NaN, as in the dense matrix.
        flag = ops.sum(u * 0.0, axis=-1, keepdims=True)
        return u, padded(y), cols, sorted_cols, flag

    def band(start, y_rows, u):
        """The tied band `[lo, lo + count · chunk)` of a block and its off-band factors.

        Returns `lo, count, (f_right, h_right), (f_left, h_left)`: row factors (batch, block) and column
        factors (batch, n), 0 on the columns the band covers.
        """
        q, p = _rows(y_rows, start, 1), _rows(y_rows, start + block - 1, 1)  # (batch, 1)
        position = ops.arange(n, dtype="int32")
        # (Over the batch; an empty batch has no chunk.)
        lo = ops.min(ops.where(u <= q, position, n), initial=n)
        hi = ops.max(ops.where(u >= p, position + 1, 0), initial=0)
        count = (hi - lo + chunk - 1) // chunk
        end = lo + count * chunk
        yb = _rows(y_rows, start, block)
        right = ops.where(position >= end, ops.exp(ops.minimum(u - p, 0.0)), 0.0)
        left = ops.where(position < lo, ops.exp(ops.minimum(q - u, 0.0)), 0.0)
        return lo, count, (ops.exp(ops.minimum(p - yb, 0.0)), right), (ops.exp(ops.minimum(yb - q, 0.0)), left)

    def chunks(start, y_rows, cols, lo, count, body, init):
        """`body(column_start, e, sign, carry)` over the band's chunks; `e`, `sign`: (batch, block, chunk)."""
        yb = ops.expand_dims(_rows(y_rows, start, block), -1)

        def step(k, carry):
            c0 = lo + k * chunk
            diff = yb - ops.expand_dims(_columns(cols[0], c0, chunk), -2)
            return body(c0, ops.exp(-ops.abs(diff)), ops.sign(diff), carry)

        return ops.fori_loop(0, count, step, init)

    def off_band(factors, v):
        """Row sums Σ_k E_ik v_k over the off-band columns, (batch, block), for v (batch, n)."""
        return sum(f * ops.sum(h * v, axis=-1, keepdims=True) for f, h in factors)

    def row_sums(start, y_rows, cols, lo, count, factors, col_index):
        """`d_i = Σ_k E_ik` and, for `col_index`, `Σ_k E_ik cols[col_index]_k`, over every column."""
        batch = ops.shape(y_rows)[0]
        zeros = ops.zeros((batch, block), y_rows.dtype)
        if col_index is None:
            d = chunks(start, y_rows, cols, lo, count, lambda c0, e, sign, acc: acc + ops.sum(e, axis=-1), zeros)
            return d + off_band(factors, 1.0), None

        def body(c0, e, sign, acc):
            return acc[0] + ops.sum(e, axis=-1), acc[1] + _matvec(e, _columns(cols[col_index], c0, chunk))

        d, num = chunks(start, y_rows, cols, lo, count, body, (zeros, zeros))
        return d + off_band(factors, 1.0), num + off_band(factors, cols[col_index][:, :n])

    def forward(y, s, a, x, scale, r, perm, inverse):
        dtype = s.dtype
        batch = ops.shape(s)[0]
        u, y_rows, cols, _, flag = setup(y, s, perm, (x,) if mode == "values" else ())
        weights = zero_padded(_rank_weights(n, s))

        def body(b, carry):
            out, den = carry
            start = b * block
            lo, count, right, left = band(start, y_rows, u)
            if mode == "values":
                d, num = row_sums(start, y_rows, cols, lo, count, (right, left), 1)
                d = d + flag
                out = ops.slice_update(out, (0, start), scale * (num / d))
            else:
                d, _ = row_sums(start, y_rows, cols, lo, count, (right, left), None)
                d = d + flag
                coef = _rows(weights, start, block) / d
                out = chunks(start, y_rows, cols, lo, count,
                             lambda c0, e, sign, acc: _add_columns(acc, c0, _matvec(ops.swapaxes(e, -1, -2), coef)),
                             out)
                off = sum(ops.sum(coef * f, axis=-1, keepdims=True) * h for f, h in (right, left))
                out = out + ops.pad(off, ((0, 0), (0, chunk)))
            return out, ops.slice_update(den, (0, start), d)

        out_width = width if mode == "values" else n + chunk
        init = (ops.zeros((batch, out_width), dtype), ops.ones((batch, width), dtype))
        out, den = ops.fori_loop(0, blocks, body, init)
        if mode == "values":
            return out[:, :n], den
        return ops.take_along_axis(out[:, :n], ops.cast(inverse, "int32"), axis=-1), den

    def backward(y, s, a, x, scale, r, perm, inverse, out, den, g):
        dtype = s.dtype
        batch = ops.shape(s)[0]
        colvals = x if mode == "values" else g
        u, y_rows, cols, (sorted_vals,), _ = setup(y, s, perm, (colvals,))
        weights = zero_padded(_rank_weights(n, s))
        if mode == "values":
            alpha_all = zero_padded(g) / den  # (batch, n_pad)
            m_all = padded(out / scale)  # v_i: L̄_ik = α_i E_ik (x_k - v_i)

        def body(b, acc):
            start = b * block
            lo, count, right, left = band(start, y_rows, u)
            if mode == "values":
                alpha, m = _rows(alpha_all, start, block), _rows(m_all, start, block)
            else:
                # L̄_ik = α_i E_ik (g_k - t_i), α = w / d, t_i = Σ_k P̂_ik g_k.
                d = _rows(den, start, block)
                alpha = _rows(weights, start, block) / d
                _, num = row_sums(start, y_rows, cols, lo, count, (right, left), 1)
                m = num / d
            # ∂L_ik/∂y_i = -sign(y_i - u_k), ∂L_ik/∂u_k = +sign(y_i - u_k).
            mcol = ops.expand_dims(m, -1)
            acol = ops.expand_dims(alpha, -1)

            def dense(c0, e, sign, acc):
                dy, ds, dx = acc
                ae = acol * e
                signed = ae * sign * (ops.expand_dims(_columns(cols[1], c0, chunk), -2) - mcol)
                dy = dy - ops.sum(signed, axis=-1)
                ds = _add_columns(ds, c0, ops.sum(signed, axis=-2))
                if mode == "values":
                    dx = _add_columns(dx, c0, ops.sum(ae, axis=-2))
                return dy, ds, dx

            zeros = ops.zeros((batch, block), dtype)
            dy_block, ds, dx = chunks(start, y_rows, cols, lo, count, dense, (zeros,) + acc[1:])
            dy_all = acc[0]
            # Off the band: sign +1 right of it, -1 left of it.
            for sign, (f, h) in ((1.0, right), (-1.0, left)):
                af = alpha * f
                hz = ops.sum(h * sorted_vals, axis=-1, keepdims=True)
                h1 = ops.sum(h, axis=-1, keepdims=True)
                dy_block = dy_block - sign * af * (hz - m * h1)
                a1 = ops.sum(af, axis=-1, keepdims=True)
                am = ops.sum(af * m, axis=-1, keepdims=True)
                ds = ds + ops.pad(sign * h * (sorted_vals * a1 - am), ((0, 0), (0, chunk)))
                if mode == "values":
                    dx = dx + ops.pad(h * a1, ((0, 0), (0, chunk)))
            return ops.slice_update(dy_all, (0, start), dy_block), ds, dx

        zeros = ops.zeros((batch, n + chunk), dtype)
        dy, ds, dx = ops.fori_loop(0, blocks, body, (ops.zeros((batch, width), dtype), zeros, zeros))
        return dy[:, :n], ds[:, :n], dx[:, :n]

    def finish(acc, x, g, perm, inverse):
        """`backward`'s gradients (rows, then columns in sorted order) as `(dy, ds, da, dx)`."""
        dy, ds, dx = acc
        ds, dx = (ops.take_along_axis(t, ops.cast(inverse, "int32"), axis=-1) for t in (ds, dx))
        return dy, ds, ops.zeros_like(ds), dx

    return forward, backward, finish


@functools.cache
def _compiled_kernels(backend, kind, mode, n, block):
    """The kernels of `kind`, on TensorFlow each compiled with XLA.

    In TensorFlow graph mode every op of a block is a separate kernel making a full pass over the
    (batch, block, n) logits; XLA fuses the exponential, the row maximum and sums into the matrix
    products' neighbours. Under an enclosing `jit_compile=True` function the inner one is inlined into the
    same cluster. JAX: the caller's `jax.jit` already compiles the whole step.
    """
    if kind == "neuralsort":
        forward, backward, finish = _neuralsort_kernels(mode, n, block, min(CHUNK_SIZE, n))
    else:
        forward, backward, finish = _softsort_kernels(mode, n, block, min(block, n))
    if backend == "tensorflow":
        import tensorflow as tf

        forward = tf.function(forward, jit_compile=True, autograph=False)
        backward = tf.function(backward, jit_compile=True, autograph=False)
    return forward, backward, finish


def peak_columns(order, dtype):
    """`(perm, inverse)` for `soft_permute`: `order` (int32, sorts `s` descending) and its inverse, as floats.

    σ(i) = `order[i]` is the column row i peaks at; the custom gradient takes floating inputs only.
    """
    return tuple(ops.cast(ops.stop_gradient(t), dtype) for t in (order, inverse_permutation(order)))


def soft_permute(kind, rows, s, a, x, scale, perm, inverse, mode, block_size=DEFAULT_BLOCK_SIZE):
    """`P̂ x` (`mode="values"`) or `P̂ᵀ w` (`mode="ranks"`), row-blocked, with a recomputing gradient.

    Args:
        kind: `"neuralsort"` or `"softsort"`.
        rows: NeuralSort: `r`, (batch, n), without gradient: the row coefficients n + 1 - 2i.
            SoftSort: `y`, (batch, n), the sorted `s` (gets a gradient).
        s: Column parameters (batch, n), the oriented input times β.
        a: NeuralSort's `A_s 1` times β, (batch, n) (SoftSort: ignored, pass zeros).
        x: Values to permute, (batch, n), divided by `scale` (ranks: ignored, pass zeros).
        scale: (batch, 1), no gradient: the values output is `scale · P̂ x`. The backward pass works with
            the upstream gradient as it is and multiplies the column gradients by `scale` last, so the
            gradient `x` receives is `P̂ᵀ g` (give `x` an identity gradient to the caller's values:
            value `values / scale`) and nothing overflows for values near the dtype's largest.
        perm: (batch, n), the indices that sort `s` descending, as floats: row i of P̂ peaks at `perm[i]`.
        inverse: (batch, n), the inverse permutation of `perm`, as floats (see `peak_columns`).
        mode: `"values"` or `"ranks"`.
        block_size: Rows per block (an int >= 1).

    Returns:
        A tensor of shape (batch, n).
    """
    n = s.shape[-1]
    block = max(1, min(int(block_size), n))
    dtype = s.dtype
    forward, backward, finish = _compiled_kernels(keras.backend.backend(), kind, mode, n, block)

    # Every tensor the gradient uses is an argument (JAX cannot close over traced values here).
    @ops.custom_gradient
    def fn(y, s, a, x, scale, r, perm, inverse):
        # No gradient flows through the kernels themselves (this function's gradient is `grad`); cutting
        # them off keeps TensorFlow's tape from differentiating the compiled loop.
        out, den = forward(*(ops.stop_gradient(t) for t in (y, s, a, x, scale, r, perm, inverse)))

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            g = ops.cast(upstream, dtype)
            acc = backward(*(ops.stop_gradient(t) for t in (y, s, a, x, scale, r, perm, inverse, out, den, g)))
            dy, ds, da, dx = finish(acc, x, g, perm, inverse)
            c = scale if mode == "values" else ops.ones_like(scale)
            zero = ops.zeros_like(perm)
            return c * dy, c * ds, c * da, dx, ops.zeros_like(scale), ops.zeros_like(r), zero, zero

        return out, grad

    if kind == "neuralsort":
        return fn(ops.zeros_like(s), s, a, x, scale, ops.stop_gradient(rows), perm, inverse)
    return fn(rows, s, a, x, scale, ops.zeros_like(s), perm, inverse)
