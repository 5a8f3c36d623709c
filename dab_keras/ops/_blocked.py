r"""Row-blocked relaxed permutations: $\hat P x$ and $\hat P^\top w$ without the $(n, n)$ matrix.

NeuralSort and SoftSort both give a relaxed permutation matrix whose rows are softmaxes of logits

$$ L_{ij} = \begin{cases} Z_{ij} - Z_{i\sigma(i)},\ Z_{ij} = r_i s_j - a_j & \text{NeuralSort: }
   r_i = n + 1 - 2i,\ a = A_s \mathbf 1 \\ -|y_i - s_j| & \text{SoftSort: } y = \operatorname{sort}(s)
   \end{cases} $$

where $s$ (and $a$, $y$) already carry the inverse temperature (the callers pass $\beta s$ with
$\beta = c/\tau$ and $|s| < 4$ before scaling) and $\sigma(i)$ is the column of the i-th largest $s$,
where row $i$ peaks (NeuralSort's theorem: $Z_{i\sigma(i)} = \max_k Z_{ik}$). Every $L_{ij} \le 0$
(NeuralSort's rounded logits are clamped at 0) and each row has an exact 0, so $E = e^L$ neither
overflows nor vanishes. NeuralSort's kernels also skip, block by block, the sorted columns outside the
block's band (see `_neuralsort_kernels`).

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


def _rows(t, start, size):
    """Rows `[start, start + size)` of the second axis of `t` (batch, n_padded, ...)."""
    begin = (0, start) + (0,) * (len(t.shape) - 2)
    return ops.slice(t, begin, (ops.shape(t)[0], size) + tuple(t.shape[2:]))


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


def _neuralsort_kernels(mode, n, block, chunk):
    r"""NeuralSort's kernels (as `_kernels`), with the columns in sorted order and each block's band only.

    With the columns sorted as the rows ($u = s_\sigma$, descending), $L_{ik} = -\sum_m (u_m - u_{m+1})
    (2|m - i| \pm 1)$ over the gaps between positions $i$ and $k$: it falls monotonically away from the
    diagonal, and row $i$'s band of entries above $-T$ (T: where $e^{-T}$ underflows the dtype) moves
    right with $i$. A block's band is therefore the union of its first row's and its last row's, found
    from those two rows; the kernels visit it in chunks of `chunk` columns and skip the rest, whose
    exponentials are 0 in the dtype anyway.
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
        threshold = 708.4 if s.dtype == "float64" else 87.4  # below e^-T: under the smallest normal number
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
            sc, ac = (col_slice(t, c0) for t in cols[:2])
            e = ops.exp(ops.minimum(_neuralsort_logits(*block_rows, sc, ac), 0.0))
            return body(c0, e, carry)

        return ops.fori_loop(0, count, step, init)

    def col_slice(t, c0):
        return ops.slice(t, (0, c0) + (0,) * (len(t.shape) - 2), (ops.shape(t)[0], chunk) + tuple(t.shape[2:]))

    def forward(y, s, a, x, scale, r, perm, inverse):
        dtype = s.dtype
        batch = ops.shape(s)[0]
        index, s_sorted, a_sorted, rows, cols, threshold = setup(s, a, r, perm, (x,) if mode == "values" else ())
        weights = zero_padded(ops.broadcast_to(ops.cast(ops.arange(1, n + 1), dtype), ops.shape(s)))

        def body(b, carry):
            out, den = carry
            start = b * block
            lo, count = band(start, rows, s_sorted, a_sorted, threshold)
            if mode == "values":
                # Two products of the same e (one matrix product with [x, 1] runs slower on CPUs).
                num, d = chunks(start, rows, cols, lo, count,
                                lambda c0, e, acc: (acc[0] + _matvec(e, col_slice(cols[2], c0)),
                                                    acc[1] + ops.sum(e, axis=-1)),
                                (ops.zeros((batch, block), dtype),) * 2)
                out = ops.slice_update(out, (0, start), scale * (num / d))
            else:
                # Two passes over the band, the row sums d first (recomputing e is faster than keeping it).
                d = chunks(start, rows, cols, lo, count, lambda c0, e, acc: acc + ops.sum(e, axis=-1),
                           ops.zeros((batch, block), dtype))
                coef = ops.expand_dims(_rows(weights, start, block) / d, -2)

                def add(c0, e, acc):
                    update = ops.slice(acc, (0, c0), (batch, chunk)) + ops.squeeze(ops.matmul(coef, e), -2)
                    return ops.slice_update(acc, (0, c0), update)

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
        weights = zero_padded(ops.broadcast_to(ops.cast(ops.arange(1, n + 1), dtype), ops.shape(s)))
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
                           lambda c0, e, acc: acc + _matvec(e, col_slice(cols[2], c0)),
                           ops.zeros((batch, block), dtype))
                delta = rowvals - t / d
            ra = _rows(rows[0], start, block) * alpha
            # (r α) x_σ rounds as x_j (r α) does, so a one-hot row cancels exactly in x_j M0 - M1.
            u = ops.stack([ra, ra * rowvals, ra * delta, alpha, alpha * rowvals, alpha * delta], axis=-2)

            def add(c0, e, acc):
                update = ops.slice(acc, (0, 0, c0), (batch, 6, chunk)) + _weighted_rows(u, e)
                return ops.slice_update(acc, (0, 0, c0), update)

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


def _softsort_kernels(mode, n, block):
    """SoftSort's blocked forward pass and its recomputing backward pass, as functions of tensors only.

    `forward(y, s, a, x, scale, r, perm) -> (out, den)` and
    `backward(y, s, a, x, scale, r, perm, out, den, upstream)` whose result `finish(acc, x, g, perm)`
    turns into `(dy, ds, da, dx)` (the column gradients before the final multiplication by `scale`);
    `den` holds the row sums $d_i$ (padded rows: 1).
    """
    blocks, pad, width, padded, zero_padded = _row_padding(n, block)

    def exp_logits(y_padded, start, s):
        yb = _rows(y_padded, start, block)
        return ops.exp(-ops.abs(ops.expand_dims(yb, -1) - ops.expand_dims(s, -2)))

    def weights_of(s):
        return zero_padded(ops.broadcast_to(ops.cast(ops.arange(1, n + 1), s.dtype), ops.shape(s)))

    def forward(y, s, a, x, scale, r, perm, inverse):
        dtype = s.dtype
        batch = ops.shape(s)[0]
        weights, y_padded = weights_of(s), padded(y)

        def body(b, carry):
            out, den = carry
            start = b * block
            e = exp_logits(y_padded, start, s)
            if mode == "values":
                sums = ops.matmul(e, ops.stack([x, ops.ones_like(x)], axis=-1))  # (batch, B, 2)
                d = sums[..., 1]
                out = ops.slice_update(out, (0, start), scale * (sums[..., 0] / d))
            else:
                d = ops.sum(e, axis=-1)
                coef = _rows(weights, start, block) / d
                out = out + ops.squeeze(_weighted_rows(ops.expand_dims(coef, -2), e), -2)
            return out, ops.slice_update(den, (0, start), d)

        init = (ops.zeros((batch, width if mode == "values" else n), dtype=dtype), ops.ones((batch, width), dtype))
        out, den = ops.fori_loop(0, blocks, body, init)
        if mode == "values":
            out = out[:, :n]
        return out, den

    def backward(y, s, a, x, scale, r, perm, inverse, out, den, g):
        dtype = s.dtype
        batch = ops.shape(s)[0]
        weights, y_padded = weights_of(s), padded(y)
        # Row i's entries concentrate near column σ(i) (the i-th in sorted order), so L̄ is written
        # around that column: x_j - v_i = (x_j - x_σ(i)) + δ_i, with δ_i = x_σ(i) - v_i formed
        # directly. Then a hard row cancels exactly (no β-amplified round-off when P̂ is one-hot).
        colvals = x if mode == "values" else g
        sorted_vals = padded(ops.take_along_axis(colvals, ops.cast(perm, "int32"), axis=-1))
        if mode == "values":
            alpha_all = zero_padded(g) / den  # (batch, n_pad)
            delta_all = sorted_vals - padded(out / scale)

        def body(b, acc):
            start = b * block
            e = exp_logits(y_padded, start, s)
            d = _rows(den, start, block)
            rowvals = _rows(sorted_vals, start, block)
            if mode == "values":
                alpha, delta = _rows(alpha_all, start, block), _rows(delta_all, start, block)
            else:
                alpha = _rows(weights, start, block) / d
                delta = rowvals - _matvec(e, g) / d
            yb = _rows(y_padded, start, block)
            sign = ops.sign(ops.expand_dims(yb, -1) - ops.expand_dims(s, -2))
            diff = ops.expand_dims(colvals, -2) - ops.expand_dims(rowvals - delta, -1)
            # ∂L_ij/∂y_i = -sign(y_i - s_j), ∂L_ij/∂s_j = +sign(y_i - s_j).
            signed = e * diff * sign * ops.expand_dims(alpha, -1)
            dy, ds, dx = acc
            dy = ops.slice_update(dy, (0, start), -ops.sum(signed, axis=-1))
            ds = ds + ops.sum(signed, axis=-2)
            if mode == "values":
                dx = dx + ops.squeeze(_weighted_rows(ops.expand_dims(alpha, -2), e), -2)
            return dy, ds, dx

        zeros = ops.zeros_like(s)
        dy, ds, dx = ops.fori_loop(0, blocks, body, (ops.zeros((batch, width), dtype), zeros, zeros))
        return dy[:, :n], ds, dx

    def finish(acc, x, g, perm, inverse):
        dy, ds, dx = acc
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
        forward, backward, finish = _softsort_kernels(mode, n, block)
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
